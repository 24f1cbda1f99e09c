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
//! - **Record bodies in segment files, not in sled's B-tree.** sled 0.34 keeps values inline in
//!   its leaf nodes and rewrites a whole leaf (copy-on-write, every few inserts) as it grows:
//!   with records of kilobytes that rewriting was most of the log's cost (the profile of a
//!   40-person loadgen: sled ~13% of all CPU). So a commit appends its records to the active
//!   segment file (`segments/<n>.seg`, a new one after 64 MiB), syncs it, and only then puts the
//!   17-byte reference (segment, offset, length) under the record's `L` key in the same atomic
//!   sled batch as before. A crash before the sled batch leaves unreferenced bytes at the end
//!   of a segment, which nothing reads; a reference always points at synced bytes. Logs
//!   written before (records inline in sled) read as they are, and a tamper drill's inline
//!   record is read the same way: the hash chain is over the record's content wherever it is.

use huiqi_events::Envelope;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub type Hash = [u8; 32];

/// Record formats: the event stored as it is, or LZ4-compressed (events of `COMPRESS_FROM`
/// bytes or more). The hash chain is always over the event's own bytes.
const FORMAT: u8 = 1;
const FORMAT_LZ4: u8 = 2;
const COMPRESS_FROM: usize = 256;
/// An `L` value that is a reference to a record in a segment file:
/// `FORMAT_REF ‖ segment u32 ‖ offset u64 ‖ length u32` (big-endian).
const FORMAT_REF: u8 = 3;
const REF_LEN: usize = 17;
/// A new segment file is started when the active one would pass this size.
const SEGMENT_BYTES: u64 = 64 << 20;
const SEGMENTS_DIR: &str = "segments";
/// How much of a segment a sequential reader (replay, audit, relay) reads at once.
const READ_AHEAD: usize = 1 << 20;
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
    #[error("segment file {path}: {source}")]
    Segment {
        path: String,
        #[source]
        source: std::io::Error,
    },
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
    pub event: bytes::Bytes,
}

/// What one commit appended, for the relay: every record from `first` to `last` (none when
/// `first > last`) and, of them, the events to publish, as [`EventLog::outbox_from`] would
/// read them back. Handed over in memory, they spare the relay reading, decompressing and
/// parsing again what was just written.
#[derive(Debug, Clone, Default)]
pub struct Published {
    pub first: u64,
    pub last: u64,
    pub events: Vec<Outgoing>,
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

/// Appends the record's encoding to `v`.
fn encode_record(v: &mut Vec<u8>, prev: &Hash, hash: &Hash, publish: &[u8], event: &[u8]) {
    let compressed = (event.len() >= COMPRESS_FROM).then(|| lz4_flex::compress_prepend_size(event));
    let body: &[u8] = compressed.as_deref().unwrap_or(event);
    v.reserve(1 + 64 + 4 + publish.len() + body.len());
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
}

/// Where a record's bytes are in the segment files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Location {
    segment: u32,
    offset: u64,
    len: u32,
}

impl Location {
    fn encode(&self) -> [u8; REF_LEN] {
        let mut v = [FORMAT_REF; REF_LEN];
        v[1..5].copy_from_slice(&self.segment.to_be_bytes());
        v[5..13].copy_from_slice(&self.offset.to_be_bytes());
        v[13..17].copy_from_slice(&self.len.to_be_bytes());
        v
    }

    /// The location an `L` value refers to, None for a record held inline.
    fn decode(seq: u64, v: &[u8]) -> Result<Option<Location>, LogError> {
        if v.first() != Some(&FORMAT_REF) {
            return Ok(None);
        }
        if v.len() != REF_LEN {
            return Err(LogError::Corrupt {
                seq,
                reason: format!("a segment reference of {} bytes, not {REF_LEN}", v.len()),
            });
        }
        Ok(Some(Location {
            segment: u32::from_be_bytes(v[1..5].try_into().expect("4 bytes")),
            offset: u64::from_be_bytes(v[5..13].try_into().expect("8 bytes")),
            len: u32::from_be_bytes(v[13..17].try_into().expect("4 bytes")),
        }))
    }
}

fn segment_path(dir: &Path, segment: u32) -> PathBuf {
    dir.join(format!("{segment:08}.seg"))
}

fn segment_error(path: &Path, source: std::io::Error) -> LogError {
    LogError::Segment {
        path: path.display().to_string(),
        source,
    }
}

/// The segment file commits append to (opened at the first commit).
struct SegmentWriter {
    segment: u32,
    file: File,
    path: PathBuf,
    /// Where the next record goes: the file's length.
    end: u64,
}

impl SegmentWriter {
    /// Opens the highest-numbered segment in `dir` for appending, or creates the first.
    fn open(dir: &Path) -> Result<SegmentWriter, LogError> {
        std::fs::create_dir_all(dir).map_err(|e| segment_error(dir, e))?;
        let mut last = None;
        for entry in std::fs::read_dir(dir).map_err(|e| segment_error(dir, e))? {
            let entry = entry.map_err(|e| segment_error(dir, e))?;
            let name = entry.file_name();
            if let Some(n) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u32>().ok())
            {
                last = last.max(Some(n));
            }
        }
        SegmentWriter::create(dir, last.unwrap_or(1))
    }

    fn create(dir: &Path, segment: u32) -> Result<SegmentWriter, LogError> {
        let path = segment_path(dir, segment);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| segment_error(&path, e))?;
        let end = file.metadata().map_err(|e| segment_error(&path, e))?.len();
        // The new file's name must survive a power loss as its contents will.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| segment_error(dir, e))?;
        Ok(SegmentWriter {
            segment,
            file,
            path,
            end,
        })
    }

    /// Appends `bytes` and syncs them to disk; returns the offset they start at. On an error
    /// (a full disk) the file is cut back to where it was, so nothing half-written stays.
    fn append(&mut self, dir: &Path, limit: u64, bytes: &[u8]) -> Result<(u32, u64), LogError> {
        if self.end > 0 && self.end + bytes.len() as u64 > limit {
            *self = SegmentWriter::create(dir, self.segment + 1)?;
        }
        let at = self.end;
        match self
            .file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data())
        {
            Ok(()) => {
                self.end += bytes.len() as u64;
                Ok((self.segment, at))
            }
            Err(e) => {
                let _ = self.file.set_len(at);
                Err(segment_error(&self.path, e))
            }
        }
    }
}

/// A window of one segment file read ahead, so sequential readers make one read per
/// [`READ_AHEAD`] bytes instead of one per record.
#[derive(Default)]
struct Window {
    segment: u32,
    start: u64,
    bytes: Vec<u8>,
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

/// Records encoded for one atomic commit: their bytes, one after another, go to a segment file;
/// their references and index keys into the sled batch.
struct Appending {
    bytes: Vec<u8>,
    /// (seq, start in `bytes`, length)
    records: Vec<(u64, usize, usize)>,
    /// The events with a publish subject, for the relay.
    published: Vec<Outgoing>,
}

impl Appending {
    /// An empty batch of records encoded into `buffer` (cleared first: a buffer kept from the
    /// last commit, so a commit does not allocate and grow one of its own).
    fn into_buffer(mut buffer: Vec<u8>) -> Self {
        buffer.clear();
        Appending {
            bytes: buffer,
            records: Vec::new(),
            published: Vec::new(),
        }
    }

    /// Adds one event after `seq`/`prev`, moving both on; its index key goes into `out`.
    fn add(&mut self, out: &mut sled::Batch, seq: &mut u64, prev: &mut Hash, p: &Pending) {
        *seq += 1;
        let publish = p.publish.as_deref().unwrap_or("");
        let event: bytes::Bytes = match &p.raw {
            Some(raw) => raw.clone(),
            None => p.envelope.encode().into(),
        };
        let hash = chain_hash(prev, *seq, publish.as_bytes(), &event);
        let start = self.bytes.len();
        encode_record(&mut self.bytes, prev, &hash, publish.as_bytes(), &event);
        self.records.push((*seq, start, self.bytes.len() - start));
        out.insert(index_key(&p.envelope.subject, *seq), &[]);
        *prev = hash;
        if !publish.is_empty() {
            self.published.push(Outgoing {
                seq: *seq,
                subject: publish.to_string(),
                id: p.envelope.id.clone(),
                event,
            });
        }
    }

    /// Writes the records to the active segment (synced) and puts their references into `out`;
    /// `writing` is what is behind the log's commit lock (its segment file opened here at the
    /// first commit; the buffer kept for the next). Returns the events to publish.
    fn write(
        self,
        segments: &Segments,
        writing: &mut Writing,
        out: &mut sled::Batch,
    ) -> Result<Vec<Outgoing>, LogError> {
        if self.records.is_empty() {
            writing.keep(self.bytes);
            return Ok(self.published);
        }
        if writing.segment.is_none() {
            writing.segment = Some(SegmentWriter::open(&segments.dir)?);
        }
        let w = writing.segment.as_mut().expect("opened above");
        let (segment, at) = w.append(&segments.dir, segments.limit, &self.bytes)?;
        writing.keep(self.bytes);
        for (seq, start, len) in self.records {
            let location = Location {
                segment,
                offset: at + start as u64,
                len: len as u32,
            };
            out.insert(&log_key(seq), &location.encode());
        }
        Ok(self.published)
    }
}

/// What commits share behind the log's commit lock.
#[derive(Default)]
struct Writing {
    /// The segment file commits append to (opened at the first commit).
    segment: Option<SegmentWriter>,
    /// The buffer the last commit encoded its records into, kept for the next: a batch of
    /// commits is hundreds of KB, and growing a fresh buffer for each (allocating, copying,
    /// faulting in new pages) was ~3% of the pipeline's CPU under `huiqi loadgen`.
    scratch: Vec<u8>,
}

impl Writing {
    /// Buffers above this are not kept: one huge batch should not hold its memory for good.
    const SCRATCH_MAX: usize = 16 * 1024 * 1024;

    fn keep(&mut self, buffer: Vec<u8>) {
        if buffer.capacity() <= Self::SCRATCH_MAX {
            self.scratch = buffer;
        }
    }

    fn appending(&mut self) -> Appending {
        Appending::into_buffer(std::mem::take(&mut self.scratch))
    }
}

/// The segment files of one log: where commits append record bodies and readers find them.
struct Segments {
    dir: PathBuf,
    /// A new segment is started when the active one would pass this size ([`SEGMENT_BYTES`]).
    limit: u64,
    /// Open files for reading, by segment number.
    files: Mutex<HashMap<u32, Arc<File>>>,
}

impl Segments {
    fn file(&self, seq: u64, segment: u32) -> Result<Arc<File>, LogError> {
        let mut files = self
            .files
            .lock()
            .map_err(|_| LogError::Meta("a segment read panicked".into()))?;
        if let Some(f) = files.get(&segment) {
            return Ok(f.clone());
        }
        let path = segment_path(&self.dir, segment);
        let f = Arc::new(File::open(&path).map_err(|e| LogError::Corrupt {
            seq,
            reason: format!("its segment file {} cannot be opened: {e}", path.display()),
        })?);
        files.insert(segment, f.clone());
        Ok(f)
    }

    /// Reads `len` bytes (at least) at `offset` of `segment` into `window`, with `ahead` bytes
    /// more when the file has them.
    fn fill(
        &self,
        seq: u64,
        at: Location,
        ahead: usize,
        window: &mut Window,
    ) -> Result<(), LogError> {
        let file = self.file(seq, at.segment)?;
        // Never past the file's end: the relay reads the newest records, at the end of the
        // active segment, on every round.
        let size = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        let want = (u64::from(at.len) + ahead as u64)
            .min(size.saturating_sub(at.offset))
            .max(u64::from(at.len)) as usize;
        window.bytes.clear();
        window.bytes.resize(want, 0);
        let mut got = 0;
        while got < want {
            match file.read_at(&mut window.bytes[got..], at.offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(LogError::Corrupt {
                        seq,
                        reason: format!("its segment {} cannot be read: {e}", at.segment),
                    })
                }
            }
        }
        window.bytes.truncate(got);
        window.segment = at.segment;
        window.start = at.offset;
        if got < at.len as usize {
            return Err(LogError::Corrupt {
                seq,
                reason: format!(
                    "segment {} ends before the record (offset {}, {} bytes)",
                    at.segment, at.offset, at.len
                ),
            });
        }
        Ok(())
    }

    /// The record an `L` value holds: the value itself for a record stored inline, else its
    /// bytes in the segment, read through `window` (which reads `ahead` bytes more).
    fn load<'a>(
        &self,
        seq: u64,
        value: &'a [u8],
        window: &'a mut Window,
        ahead: usize,
    ) -> Result<&'a [u8], LogError> {
        let Some(at) = Location::decode(seq, value)? else {
            return Ok(value);
        };
        let inside = window.segment == at.segment
            && at.offset >= window.start
            && at.offset + u64::from(at.len) <= window.start + window.bytes.len() as u64;
        if !inside {
            self.fill(seq, at, ahead, window)?;
        }
        let from = (at.offset - window.start) as usize;
        Ok(&window.bytes[from..from + at.len as usize])
    }
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
    segments: Segments,
    /// Serialises commits; holds the segment file they append to.
    writing: Mutex<Writing>,
}

impl EventLog {
    /// Opens (or creates) the log in `dir`. sled locks the directory: one process at a time.
    /// The segment files are in `dir/segments`, created at the first commit.
    ///
    /// A log of this process that was just dropped may still hold the directory's lock for a
    /// moment (sled's flusher thread lets go of it when it next wakes, up to ~0.5 s later; a
    /// takeover that rebuilds a log and then opens it met that), so a held lock is tried again
    /// for up to 3 s before the error is returned.
    pub fn open(dir: &Path) -> Result<Self, LogError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let db = loop {
            match sled::Config::new()
                .path(dir)
                .cache_capacity(32 * 1024 * 1024)
                .open()
            {
                // sled reports the held lock as an `Other` error naming it.
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => break other?,
            }
        };
        Ok(EventLog {
            tree: db.open_tree("events")?,
            db,
            segments: Segments {
                dir: dir.join(SEGMENTS_DIR),
                limit: SEGMENT_BYTES,
                files: Mutex::new(HashMap::new()),
            },
            writing: Mutex::new(Writing::default()),
        })
    }

    /// Applies a batch of commits as one atomic sled batch, then flushes to disk. When this
    /// returns `Ok`, every message in the batch may be acked.
    pub fn commit(&self, batch: &[Commit]) -> Result<Vec<Applied>, LogError> {
        self.commit_published(batch).map(|(applied, _)| applied)
    }

    /// [`EventLog::commit`], also returning what it appended for the relay ([`Published`]).
    pub fn commit_published(
        &self,
        batch: &[Commit],
    ) -> Result<(Vec<Applied>, Published), LogError> {
        let mut writer = self
            .writing
            .lock()
            .map_err(|_| LogError::Meta("a commit panicked".into()))?;
        let (mut seq, mut prev) = self.head()?;
        let first = seq + 1;
        let mut out = sled::Batch::default();
        let mut appending = writer.appending();
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
                appending.add(&mut out, &mut seq, &mut prev, p);
            }
            applied.push(Applied::Appended {
                first,
                count: commit.events.len() as u64,
            });
        }
        let events = appending.write(&self.segments, &mut writer, &mut out)?;
        out.insert(HEAD_KEY, encode_head(seq, &prev));
        self.tree.apply_batch(out)?;
        self.db.flush()?;
        Ok((
            applied,
            Published {
                first,
                last: seq,
                events,
            },
        ))
    }

    /// Marks record `seq` as skipped (an operator's explicit decision) and appends `event`
    /// recording it, in one atomic batch.
    pub fn skip(&self, seq: u64, reason: &str, event: Pending) -> Result<(), LogError> {
        let mut writer = self
            .writing
            .lock()
            .map_err(|_| LogError::Meta("a commit panicked".into()))?;
        let (mut head, mut prev) = self.head()?;
        let mut out = sled::Batch::default();
        out.insert(skipped_key(seq).to_vec(), reason.as_bytes());
        let mut appending = writer.appending();
        appending.add(&mut out, &mut head, &mut prev, &event);
        appending.write(&self.segments, &mut writer, &mut out)?;
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
        let mut window = Window::default();
        self.tree
            .range(log_key(from)..log_key(u64::MAX))
            .map(move |item| {
                let (k, v) = item?;
                let seq = seq_of(&k)?;
                decode_record(seq, self.segments.load(seq, &v, &mut window, READ_AHEAD)?)
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
        let mut window = Window::default();
        for item in self.tree.range(log_key(from)..log_key(u64::MAX)) {
            let (k, v) = item?;
            let seq = seq_of(&k)?;
            last = seq;
            let raw = split_record(seq, self.segments.load(seq, &v, &mut window, READ_AHEAD)?)?;
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
                    event: raw.event.into_owned().into(),
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
        let mut window = Window::default();
        for item in self.tree.scan_prefix(&prefix) {
            let (k, _) = item?;
            let seq = u64::from_be_bytes(
                k[prefix.len()..]
                    .try_into()
                    .map_err(|_| LogError::Meta("index key has the wrong length".into()))?,
            );
            if let Some(v) = self.tree.get(log_key(seq))? {
                // A claim's records are near each other: a little read-ahead covers several.
                out.push(decode_record(
                    seq,
                    self.segments.load(seq, &v, &mut window, 64 * 1024)?,
                )?);
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
        let mut window = Window::default();
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
            let bytes = match self.segments.load(seq, &v, &mut window, READ_AHEAD) {
                Ok(bytes) => bytes,
                Err(e) => {
                    report.problems.push(e.to_string());
                    report.records += 1;
                    expected_seq = seq + 1;
                    continue;
                }
            };
            report.bytes += bytes.len() as u64;
            match split_record(seq, bytes) {
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

    /// For tests and tamper drills: the raw bytes of a record (wherever it is stored).
    pub fn raw_record(&self, seq: u64) -> Result<Option<Vec<u8>>, LogError> {
        let Some(v) = self.tree.get(log_key(seq))? else {
            return Ok(None);
        };
        let mut window = Window::default();
        Ok(Some(self.segments.load(seq, &v, &mut window, 0)?.to_vec()))
    }

    /// For tests and tamper drills: overwrite (stored inline, as logs before the segment files
    /// held every record) or remove a raw record, bypassing the chain.
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

    #[test]
    fn a_commit_hands_the_relay_what_it_would_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path()).unwrap();
        log.commit(&[commit(Some("in-0"), vec![ev("C-0", 0)])])
            .unwrap();
        let received = ev("C-1", 1);
        let raw = bytes::Bytes::from(received.encode());
        let batch = [
            Commit {
                inbox_id: Some("in-1".into()),
                events: vec![
                    Pending::publish(ev("C-1", 2), "huiqi.internal.x"),
                    Pending::local(ev("C-1", 3)),
                    Pending {
                        envelope: received,
                        publish: Some("huiqi.internal.y".into()),
                        raw: Some(raw.clone()),
                    },
                ],
            },
            commit(Some("in-0"), vec![ev("C-0", 9)]),
        ];
        let (applied, published) = log.commit_published(&batch).unwrap();
        assert_eq!(applied[1], Applied::Duplicate);
        assert_eq!((published.first, published.last), (2, 4));
        let (read, last) = log.outbox_from(2, 10).unwrap();
        assert_eq!(last, 4);
        let view = |o: &[Outgoing]| {
            o.iter()
                .map(|o| (o.seq, o.subject.clone(), o.id.clone(), o.event.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(view(&published.events), view(&read));
        assert_eq!(published.events[1].event, raw, "received bytes as received");
        // A batch of repeats appends nothing: an empty range.
        let (_, none) = log
            .commit_published(&[commit(Some("in-1"), vec![ev("C-1", 5)])])
            .unwrap();
        assert!(none.first > none.last && none.events.is_empty());
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
    fn record_bodies_live_in_segment_files_and_sled_holds_references() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(dir.path()).unwrap();
        log.segments.limit = 2_000;
        let mut sent = Vec::new();
        for i in 0..40 {
            let e = ev(&format!("C-{}", i % 3), i);
            sent.push(e.clone());
            log.commit(&[commit(Some(&format!("in-{i}")), vec![e])])
                .unwrap();
        }
        // sled holds a 17-byte reference per record, the segments the bodies; several
        // segments, none much past the limit.
        let value = log.tree.get(log_key(7)).unwrap().unwrap();
        assert_eq!(value.len(), REF_LEN);
        assert_eq!(value[0], FORMAT_REF);
        let segments: Vec<_> = std::fs::read_dir(dir.path().join(SEGMENTS_DIR))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .collect();
        assert!(segments.len() >= 3, "{segments:?}");
        assert!(segments.iter().all(|n| *n <= 2_000 + 300), "{segments:?}");
        drop(log);

        let log = EventLog::open(dir.path()).unwrap();
        let back: Vec<Envelope> = log.records_from(1).map(|r| r.unwrap().envelope).collect();
        assert_eq!(back, sent);
        let c1: Vec<u64> = log
            .subject_records("C-1")
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(
            c1,
            (1..=40).filter(|s| (s - 1) % 3 == 1).collect::<Vec<_>>()
        );
        let (out, last) = log.outbox_from(38, 10).unwrap();
        assert_eq!((out.len(), last), (3, 40));
        assert_eq!(out[2].event, sent[39].encode());
        let report = log.audit().unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
        assert_eq!(report.records, 40);
    }

    #[test]
    fn bytes_a_crash_left_unreferenced_are_never_read_and_the_log_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = EventLog::open(dir.path()).unwrap();
            log.commit(&[commit(Some("in-1"), vec![ev("C-1", 1), ev("C-1", 2)])])
                .unwrap();
        }
        // A crash after the segment write and before the sled batch: bytes no key refers to.
        let segment = segment_path(&dir.path().join(SEGMENTS_DIR), 1);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&segment)
            .unwrap();
        f.write_all(b"\x01half a record that no reference points at")
            .unwrap();
        drop(f);
        let log = EventLog::open(dir.path()).unwrap();
        assert_eq!(log.head().unwrap().0, 2);
        log.commit(&[commit(Some("in-2"), vec![ev("C-1", 3)])])
            .unwrap();
        let ns: Vec<u64> = log
            .records_from(1)
            .map(|r| r.unwrap().envelope.data.value()["n"].as_u64().unwrap())
            .collect();
        assert_eq!(ns, vec![1, 2, 3]);
        assert!(log.audit().unwrap().is_clean());
    }

    #[test]
    fn a_lost_or_cut_segment_is_reported_per_record_not_read_as_something_else() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(dir.path()).unwrap();
        log.segments.limit = 1_000;
        for i in 0..12 {
            log.commit(&[commit(None, vec![ev("C-1", i)])]).unwrap();
        }
        drop(log);
        let segments = dir.path().join(SEGMENTS_DIR);
        std::fs::remove_file(segment_path(&segments, 2)).unwrap();
        let one = segment_path(&segments, 1);
        let len = std::fs::metadata(&one).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&one)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        let log = EventLog::open(dir.path()).unwrap();
        let report = log.audit().unwrap();
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains("cannot be opened")),
            "{:?}",
            report.problems
        );
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains("ends before the record")),
            "{:?}",
            report.problems
        );
        let read: Vec<_> = log.records_from(1).collect();
        assert!(read.iter().any(Result::is_err));
        assert!(read[0].is_ok(), "{:?}", read[0]);
    }

    #[test]
    fn a_log_with_records_inline_in_sled_reads_and_audits_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path()).unwrap();
        for i in 0..4 {
            log.commit(&[commit(None, vec![ev("C-1", i)])]).unwrap();
        }
        // As logs were written before the segment files: every record's bytes under its key.
        for seq in 1..=4 {
            let raw = log.raw_record(seq).unwrap().unwrap();
            log.tamper(seq, Some(raw)).unwrap();
            assert_ne!(log.tree.get(log_key(seq)).unwrap().unwrap()[0], FORMAT_REF);
        }
        drop(log);
        std::fs::remove_dir_all(dir.path().join(SEGMENTS_DIR)).unwrap();
        let log = EventLog::open(dir.path()).unwrap();
        let ns: Vec<u64> = log
            .records_from(1)
            .map(|r| r.unwrap().envelope.data.value()["n"].as_u64().unwrap())
            .collect();
        assert_eq!(ns, vec![0, 1, 2, 3]);
        assert!(log.audit().unwrap().is_clean());
        // And it goes on with new records in segments.
        log.commit(&[commit(None, vec![ev("C-1", 4)])]).unwrap();
        assert_eq!(log.records_from(1).count(), 5);
        assert!(log.audit().unwrap().is_clean());
    }

    #[test]
    fn a_log_dropped_a_moment_ago_is_opened_once_its_lock_is_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = EventLog::open(dir.path()).unwrap();
        first
            .commit(&[commit(Some("in-1"), vec![ev("C-1", 1)])])
            .unwrap();
        let closing = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(400));
            drop(first);
        });
        let second = EventLog::open(dir.path()).unwrap();
        assert_eq!(second.head().unwrap().0, 1);
        closing.join().unwrap();
        // Held for longer than the retry: the lock's error, not a hang.
        let started = std::time::Instant::now();
        assert!(EventLog::open(dir.path()).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
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
