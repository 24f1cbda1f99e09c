//! Reservations of what a decision counts across partitions (docs/SCALING.md, step 6): the
//! building block, not yet wired into award (which refuses to start split until it is).
//!
//! Why: split by applicant, each partition's award folds only its own applicants' decisions,
//! but some counts are not per applicant — a history key with no USCC: a person paid once per
//! measure, a number's data package, M21's person counted for one agency. Those are taken here,
//! one replicated key-value entry per count key (`huiqi-counts`, named by a hash of the key so
//! no ID number is in the bucket), with compare-and-set writes:
//! - [`reserve`] takes a key **pending** for a claim (create-only), or finds it the claim's
//!   already, or **confirmed** for another claim (the caller counts it as the other's), or
//!   pending for another claim — then it waits until that one is confirmed or released, so a
//!   claim never loses a person to a decision that in the end did not count the person;
//! - [`confirm`] marks it counted once the decision is in the claim's log — or [`finalize`]
//!   confirms all of a claim's counts with one write, a list a reader consults when it meets
//!   a count pending for that claim;
//! - [`release`] gives it back (the decision, taken again, no longer counts it).
//!
//! Taking a claim's keys in sorted order makes the waiting deadlock-free: a claim waits only
//! for a key smaller than every key it has yet to take, held by a claim that waits, if at all,
//! for a larger one. (They may be tried all at once with [`try_reserve`], as long as a claim
//! gives back every key above one it must wait for before it waits.)

use crate::BusError;
use async_nats::jetstream::{self, kv, stream};
use huiqi_events::history::Key;
use huiqi_events::Money;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::time::{Duration, Instant};

/// The bucket of cross-partition counts.
pub const BUCKET: &str = "huiqi-counts";

/// The JetStream stream behind [`BUCKET`].
pub fn bucket_stream() -> String {
    format!("KV_{BUCKET}")
}

/// Whether a count crosses partitions: its key is not about one applicant.
pub fn crosses_partitions(key: &Key) -> bool {
    key.uscc.is_empty()
}

/// The bucket key of a count key: `c.` and the SHA-256 of its canonical JSON, so the bucket
/// holds no ID or phone number.
pub fn key_name(key: &Key) -> String {
    let json = serde_json::to_vec(key).expect("a history key serializes");
    format!("c.{}", crate::anchor::hex(&sha2::Sha256::digest(&json)))
}

/// Whether the claim holding a key has its decision in its log yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    Pending,
    Confirmed,
}

/// Who holds a key, as the bucket records it: what another partition needs to count it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub claim_id: String,
    /// The holding claim's applicant.
    pub uscc: String,
    /// The amount the holding decision counts for the key.
    pub amount: Money,
    pub state: HoldState,
}

/// What [`reserve`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserved {
    /// The key is this claim's (taken now, or before: a decision taken again after a restart),
    /// at this revision; its state as found.
    Ours { revision: u64, state: HoldState },
    /// Another claim's decision counts it.
    Counted(Holder),
}

fn err(what: &str, e: &dyn std::fmt::Display) -> BusError {
    BusError::Setup {
        what: what.to_string(),
        message: e.to_string(),
    }
}

/// The bucket's stream settings (`lease::kv_bucket_config`: reads from the leader, since a
/// replica catching up could show a released key as still held).
pub fn bucket_config(replicas: usize) -> stream::Config {
    let mut config = crate::lease::kv_bucket_config(
        BUCKET,
        "Huiqi: counts that cross partitions, by the claim that counts them",
        replicas,
    );
    // A claim's list of its counts ([`finalize`]): up to FINAL_LIST_MAX names.
    config.max_message_size = 128 * 1024;
    config
}

/// The most counts a claim confirms with one list ([`finalize`]); a claim with more confirms
/// each count ([`confirm_at`]).
pub const FINAL_LIST_MAX: usize = 1_000;

/// The key of a claim's list of its counts.
fn final_name(claim_id: &str) -> String {
    format!(
        "f.{}",
        crate::anchor::hex(&sha2::Sha256::digest(claim_id.as_bytes()))
    )
}

/// What a claim's decision counts, by key name: written once its counts are all its own, in
/// place of confirming each (one write instead of one per count).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FinalList {
    keys: Vec<String>,
}

/// Confirms every key of `keys` (all taken for `claim_id`) with one write: a reader meeting
/// one of them pending for this claim finds it in the list and counts it as this claim's; a
/// key pending for this claim that is *not* in the list was left over by a round that did not
/// end (a killed worker) and is free. At most [`FINAL_LIST_MAX`] keys. Written again (a claim
/// decided again after a restart), the last list holds.
async fn finalize_once(kv: &kv::Store, claim_id: &str, keys: &[&Key]) -> Result<(), BusError> {
    let list = FinalList {
        keys: keys.iter().map(|k| key_name(k)).collect(),
    };
    let name = final_name(claim_id);
    kv.put(
        &name,
        serde_json::to_vec(&list).expect("a list serializes").into(),
    )
    .await
    .map(|_| ())
    .map_err(|e| err(&format!("finalizing the counts of {claim_id}"), &e))
}

/// The list of `claim_id`'s counts and its revision, when it has been written.
async fn final_list(kv: &kv::Store, claim_id: &str) -> Result<Option<(u64, FinalList)>, BusError> {
    let name = final_name(claim_id);
    match crate::lease::read(kv, &name).await {
        Ok(Some(e)) if e.operation == kv::Operation::Put => serde_json::from_slice(&e.value)
            .map(|list| Some((e.revision, list)))
            .map_err(|x| BusError::Handler(format!("counts list {name}: {x}"))),
        Ok(_) => Ok(None),
        Err(e) => Err(err(&format!("counts list {name}"), &e)),
    }
}

/// Creates the bucket when it is missing (admin; `huiqi setup` for a split deployment).
pub async fn ensure_bucket(js: &jetstream::Context, replicas: usize) -> Result<(), BusError> {
    if js.get_stream(bucket_stream()).await.is_ok() {
        return Ok(());
    }
    crate::setup::create_stream_patiently(js, bucket_config(replicas))
        .await
        .map_err(|e| err(&format!("counts bucket {BUCKET}"), &e))
}

/// The bucket (the admin provisions it).
pub async fn open_bucket(js: &jetstream::Context) -> Result<kv::Store, BusError> {
    js.get_key_value(BUCKET)
        .await
        .map_err(|e| crate::setup::missing_needs_admin(format!("counts bucket {BUCKET}"), &e))
}

fn encode(h: &Holder) -> bytes::Bytes {
    serde_json::to_vec(h).expect("a holder serializes").into()
}

/// The live holder of `name` and the entry's revision (None: never taken, or released — then
/// with the revision a new create must name).
async fn current(kv: &kv::Store, name: &str) -> Result<(u64, Option<Holder>), BusError> {
    match crate::lease::read(kv, name).await {
        Ok(None) => Ok((0, None)),
        Ok(Some(e)) if e.operation != kv::Operation::Put => Ok((e.revision, None)),
        Ok(Some(e)) => {
            let h: Holder = serde_json::from_slice(&e.value)
                .map_err(|x| BusError::Handler(format!("counts bucket entry {name}: {x}")))?;
            Ok((e.revision, Some(h)))
        }
        Err(e) => Err(err(&format!("counts bucket entry {name}"), &e)),
    }
}

/// One look at `key` without waiting: taken pending for `mine.claim_id` if free, or found
/// this claim's, or another's confirmed ([`Reserved`]); `Err(holder)` when another claim holds
/// it pending.
async fn try_reserve_once(
    kv: &kv::Store,
    key: &Key,
    mine: &Holder,
) -> Result<Result<Reserved, Holder>, BusError> {
    let name = key_name(key);
    let pending = Holder {
        state: HoldState::Pending,
        ..mine.clone()
    };
    // The revision to take the key at when it looks free (0: never written).
    let mut at = 0;
    loop {
        match kv.update(&name, encode(&pending), at).await {
            Ok(revision) => {
                return Ok(Ok(Reserved::Ours {
                    revision,
                    state: HoldState::Pending,
                }))
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
            Err(e) => return Err(err(&format!("reserving {name}"), &e)),
        }
        let (revision, holder) = current(kv, &name).await?;
        match holder {
            // Released (or never there) since: take it at the revision now current.
            None => at = revision,
            Some(h) if h.claim_id == mine.claim_id => {
                return Ok(Ok(Reserved::Ours {
                    revision,
                    state: h.state,
                }))
            }
            Some(h) if h.state == HoldState::Confirmed => return Ok(Ok(Reserved::Counted(h))),
            // Pending for another claim: confirmed by its list; or left over by a round that
            // did not end — taken before the list was written (one bucket, one sequence) and
            // not in it: free; or taken after the list, by a round of a claim decided again
            // after a restart that is still going on, or with no list yet: wait.
            Some(h) => match final_list(kv, &h.claim_id).await? {
                Some((_, list)) if list.keys.contains(&name) => {
                    return Ok(Ok(Reserved::Counted(Holder {
                        state: HoldState::Confirmed,
                        ..h
                    })))
                }
                Some((listed_at, _)) if revision < listed_at => at = revision,
                _ => return Ok(Err(h)),
            },
        }
    }
}

/// Takes `key` pending for `mine.claim_id` (see the module docs), waiting while another claim
/// holds it pending, polling every 20 ms, for at most `patience`; past that the error names
/// the claim waited for (its partition's worker is down: the caller tries again later).
pub async fn reserve(
    kv: &kv::Store,
    key: &Key,
    mine: &Holder,
    patience: Duration,
) -> Result<Reserved, BusError> {
    let deadline = Instant::now() + patience;
    loop {
        match try_reserve(kv, key, mine).await? {
            Ok(r) => return Ok(r),
            Err(h) if Instant::now() > deadline => {
                return Err(err(
                    &format!("reserving a count for {}", mine.claim_id),
                    &format!(
                        "held pending by claim {} for longer than {patience:?} (its partition's worker may be down)",
                        h.claim_id
                    ),
                ))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Marks `key` counted by `mine.claim_id` (its decision is in its log). Idempotent; an error if
/// another claim holds the key (which a reservation of this claim's rules out).
async fn confirm_once(kv: &kv::Store, key: &Key, mine: &Holder) -> Result<(), BusError> {
    let name = key_name(key);
    let confirmed = Holder {
        state: HoldState::Confirmed,
        ..mine.clone()
    };
    loop {
        let (revision, holder) = current(kv, &name).await?;
        match holder {
            Some(h) if h.claim_id == mine.claim_id && h.state == HoldState::Confirmed => {
                return Ok(())
            }
            Some(h) if h.claim_id == mine.claim_id => {
                match kv.update(&name, encode(&confirmed), revision).await {
                    Ok(_) => return Ok(()),
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                    Err(e) => return Err(err(&format!("confirming {name}"), &e)),
                }
            }
            // Not a NATS trouble: never tried again.
            other => {
                return Err(BusError::Handler(format!(
                    "confirming a count of {}: the key is not this claim's but {}",
                    mine.claim_id,
                    other
                        .map(|h| h.claim_id)
                        .unwrap_or_else(|| "nobody's".into())
                )))
            }
        }
    }
}

/// [`confirm`] when the revision this claim took the key at is known (one write, no read);
/// falls back to reading the key if it moved since.
async fn confirm_at_once(
    kv: &kv::Store,
    key: &Key,
    mine: &Holder,
    revision: u64,
) -> Result<(), BusError> {
    let confirmed = Holder {
        state: HoldState::Confirmed,
        ..mine.clone()
    };
    match kv.update(key_name(key), encode(&confirmed), revision).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
            confirm_once(kv, key, mine).await
        }
        Err(e) => Err(err(&format!("confirming {}", key_name(key)), &e)),
    }
}

/// Gives `key` back if `claim_id` holds it pending (a confirmed count is never released here).
async fn release_once(kv: &kv::Store, key: &Key, claim_id: &str) -> Result<(), BusError> {
    let name = key_name(key);
    loop {
        let (revision, holder) = current(kv, &name).await?;
        match holder {
            Some(h) if h.claim_id == claim_id && h.state == HoldState::Pending => {
                match kv.delete_expect_revision(&name, Some(revision)).await {
                    Ok(()) => return Ok(()),
                    Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => continue,
                    Err(e) => return Err(err(&format!("releasing {name}"), &e)),
                }
            }
            _ => return Ok(()),
        }
    }
}

/// How long an operation on the bucket is tried again while NATS cannot answer (a node lost, a
/// leader being elected): as long as a service waits for JetStream elsewhere. Every operation
/// here may be repeated (create-only and compare-and-set writes, an idempotent list).
const PATIENCE_FOR_NATS: Duration = Duration::from_secs(120);

async fn patiently<T, F, Fut>(what: &str, op: F) -> Result<T, BusError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, BusError>>,
{
    let deadline = Instant::now() + PATIENCE_FOR_NATS;
    loop {
        match op().await {
            Ok(t) => return Ok(t),
            // What the bucket answered (a key another claim holds) is final; only NATS not
            // answering is tried again.
            Err(e @ BusError::Handler(_)) => return Err(e),
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(what, error = %e, "counts bucket not answering; trying again");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One look at `key` without waiting: taken pending for `mine.claim_id` if free, or found
/// this claim's, or another's confirmed ([`Reserved`]); `Err(holder)` when another claim holds
/// it pending. NATS errors are tried again for a while.
pub async fn try_reserve(
    kv: &kv::Store,
    key: &Key,
    mine: &Holder,
) -> Result<Result<Reserved, Holder>, BusError> {
    patiently("reserving a count", || try_reserve_once(kv, key, mine)).await
}

/// Confirms every key of `keys` with one list (see [`finalize_once`]'s rules above).
pub async fn finalize(kv: &kv::Store, claim_id: &str, keys: &[&Key]) -> Result<(), BusError> {
    patiently("writing a claim's counts list", || {
        finalize_once(kv, claim_id, keys)
    })
    .await
}

/// Marks `key` counted by `mine.claim_id` (its decision is in its log). Idempotent; an error if
/// another claim holds the key (which a reservation of this claim's rules out).
pub async fn confirm(kv: &kv::Store, key: &Key, mine: &Holder) -> Result<(), BusError> {
    patiently("confirming a count", || confirm_once(kv, key, mine)).await
}

/// [`confirm`] when the revision this claim took the key at is known (one write, no read).
pub async fn confirm_at(
    kv: &kv::Store,
    key: &Key,
    mine: &Holder,
    revision: u64,
) -> Result<(), BusError> {
    patiently("confirming a count", || {
        confirm_at_once(kv, key, mine, revision)
    })
    .await
}

/// Gives `key` back if `claim_id` holds it pending (a confirmed count is never released here).
pub async fn release(kv: &kv::Store, key: &Key, claim_id: &str) -> Result<(), BusError> {
    patiently("releasing a count", || release_once(kv, key, claim_id)).await
}
