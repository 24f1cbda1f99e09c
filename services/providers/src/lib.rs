//! The check-provider and treasury simulator: stands in for the bureaus so the whole pipeline
//! runs on one machine, in tests and in `huiqi up`.
//!
//! It answers `huiqi.checks.<check>` from a folder of JSON Lines fixtures in the format of
//! CONTRACT.md, and `huiqi.treasury.pay` by settling everything except the accounts listed in
//! `treasury_refusals.jsonl`. The treasury is idempotent by award id, with its ledger appended
//! to a file, so a payment re-sent after a crash gets the first settlement back and tests can
//! count real payments. Latency, error replies and dropped requests can be injected to exercise
//! the callers' retries.

use futures_util::StreamExt;
use huiqi_events::payloads::{TreasuryPay, TreasuryReply, TreasuryStatus};
use huiqi_events::subjects;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "providers";

#[derive(Debug, Clone)]
pub struct Settings {
    pub nats: huiqi_bus::NatsOptions,
    pub fixtures_dir: PathBuf,
    /// Where the treasury keeps its ledger (JSON Lines); None keeps it in memory only.
    pub ledger_path: Option<PathBuf>,
    /// Added to every reply.
    pub latency: Duration,
    /// Every n-th check request is answered `{"error": …}` (0: never).
    pub error_every: u64,
    /// Every n-th check request gets no reply at all (0: never).
    pub drop_every: u64,
}

impl Settings {
    pub fn new(nats: huiqi_bus::NatsOptions, fixtures_dir: PathBuf) -> Self {
        Settings {
            nats,
            fixtures_dir,
            ledger_path: None,
            latency: Duration::ZERO,
            error_every: 0,
            drop_every: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProvidersError {
    #[error("fixture {file}:{line}: {message}")]
    Fixture {
        file: String,
        line: usize,
        message: String,
    },
    #[error("io on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("nats: {0}")]
    Nats(String),
}

/// The fixtures, indexed the way the checks ask. Each entry is kept as its JSON text and
/// replies are put together from those texts: a million-person fixture set stays compact and
/// answering copies bytes instead of building JSON trees.
/// Prior payments by (uscc, measure): each with its person (None: enterprise-level) and JSON.
type PriorPayments = HashMap<(String, String), Vec<(Option<String>, Box<str>)>>;

#[derive(Default)]
pub struct Fixtures {
    by_uscc: HashMap<&'static str, HashMap<String, Box<str>>>,
    social_insurance: HashMap<(String, String), Box<str>>,
    prior: PriorPayments,
    by_person: HashMap<&'static str, HashMap<String, Box<str>>>,
    telecom: HashMap<String, Box<str>>,
    refusals: HashMap<String, String>,
}

fn text(m: Map<String, Value>) -> Box<str> {
    serde_json::to_string(&Value::Object(m))
        .expect("a JSON object serializes")
        .into_boxed_str()
}

/// `{"<key>":[a,b,…]}` from the entries' JSON texts.
fn list_reply<'a>(key: &str, items: impl Iterator<Item = &'a str>) -> String {
    let mut out = format!("{{\"{key}\":[");
    for (i, it) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(it);
    }
    out.push_str("]}");
    out
}

/// A fixture line: its line number and the JSON object.
type Line = (usize, Map<String, Value>);

fn read_lines(dir: &Path, name: &str) -> Result<Vec<Line>, ProvidersError> {
    let path = dir.join(format!("{name}.jsonl"));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(source) => {
            return Err(ProvidersError::Io {
                path: path.display().to_string(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(m)) => out.push((i + 1, m)),
            Ok(_) => {
                return Err(ProvidersError::Fixture {
                    file: format!("{name}.jsonl"),
                    line: i + 1,
                    message: "not a JSON object".into(),
                })
            }
            Err(e) => {
                return Err(ProvidersError::Fixture {
                    file: format!("{name}.jsonl"),
                    line: i + 1,
                    message: e.to_string(),
                })
            }
        }
    }
    Ok(out)
}

fn take_key(
    file: &str,
    line: usize,
    m: &mut Map<String, Value>,
    key: &str,
) -> Result<String, ProvidersError> {
    match m.remove(key) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(ProvidersError::Fixture {
            file: format!("{file}.jsonl"),
            line,
            message: format!("missing string key `{key}`"),
        }),
    }
}

impl Fixtures {
    pub fn load(dir: &Path) -> Result<Self, ProvidersError> {
        let mut f = Fixtures::default();
        for check in ["enterprise", "statistics"] {
            let mut map = HashMap::new();
            for (line, mut m) in read_lines(dir, check)? {
                let uscc = take_key(check, line, &mut m, "uscc")?;
                map.insert(uscc, text(m));
            }
            f.by_uscc.insert(check, map);
        }
        for (line, mut m) in read_lines(dir, "social_insurance")? {
            let uscc = take_key("social_insurance", line, &mut m, "uscc")?;
            let id = m
                .get("id_number")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| ProvidersError::Fixture {
                    file: "social_insurance.jsonl".into(),
                    line,
                    message: "missing `id_number`".into(),
                })?;
            f.social_insurance.insert((uscc, id), text(m));
        }
        for (line, mut m) in read_lines(dir, "prior_benefits")? {
            let uscc = take_key("prior_benefits", line, &mut m, "uscc")?;
            let measure = take_key("prior_benefits", line, &mut m, "measure")?;
            let person = m.get("person").and_then(Value::as_str).map(str::to_string);
            f.prior
                .entry((uscc, measure))
                .or_default()
                .push((person, text(m)));
        }
        for check in ["presence", "residence_permit", "exit_entry"] {
            let mut map = HashMap::new();
            for (line, m) in read_lines(dir, check)? {
                let id = m
                    .get("id_number")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| ProvidersError::Fixture {
                        file: format!("{check}.jsonl"),
                        line,
                        message: "missing `id_number`".into(),
                    })?;
                map.insert(id, text(m));
            }
            f.by_person.insert(check, map);
        }
        for (line, m) in read_lines(dir, "telecom")? {
            let phone = m
                .get("phone")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| ProvidersError::Fixture {
                    file: "telecom.jsonl".into(),
                    line,
                    message: "missing `phone`".into(),
                })?;
            f.telecom.insert(phone, text(m));
        }
        for (line, mut m) in read_lines(dir, "treasury_refusals")? {
            let acct = take_key("treasury_refusals", line, &mut m, "bank_account")?;
            let reason = m
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("refused")
                .to_string();
            let _ = line;
            f.refusals.insert(acct, reason);
        }
        Ok(f)
    }

    /// The reply to one check request (its JSON text), or an error text for a request it
    /// cannot read.
    pub fn answer(&self, check: &str, req: &Value) -> Result<String, String> {
        let s = |k: &str| {
            req.get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("request needs string `{k}`"))
        };
        let list = |k: &str| -> Result<Vec<&str>, String> {
            req.get(k)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .ok_or_else(|| format!("request needs list `{k}`"))
        };
        match check {
            "enterprise" => Ok(self.by_uscc["enterprise"]
                .get(s("uscc")?)
                .map(|t| t.to_string())
                .unwrap_or_else(|| "{\"found\":false}".into())),
            "statistics" => self.by_uscc["statistics"]
                .get(s("uscc")?)
                .map(|t| t.to_string())
                .ok_or_else(|| "no statistics for this enterprise".into()),
            "social_insurance" => {
                let uscc = s("uscc")?;
                let ids = list("id_numbers")?;
                Ok(list_reply(
                    "persons",
                    ids.into_iter().filter_map(|id| {
                        self.social_insurance
                            .get(&(uscc.to_string(), id.to_string()))
                            .map(|t| &**t)
                    }),
                ))
            }
            "presence" | "residence_permit" | "exit_entry" => {
                let map = &self.by_person[check];
                let ids = list("id_numbers")?;
                Ok(list_reply(
                    "persons",
                    ids.into_iter().filter_map(|id| map.get(id).map(|t| &**t)),
                ))
            }
            "telecom" => {
                let phones = list("phones")?;
                Ok(list_reply(
                    "numbers",
                    phones
                        .into_iter()
                        .filter_map(|p| self.telecom.get(p).map(|t| &**t)),
                ))
            }
            "prior_benefits" => {
                let key = (s("uscc")?.to_string(), s("measure")?.to_string());
                let ids = list("id_numbers")?;
                Ok(list_reply(
                    "payments",
                    self.prior
                        .get(&key)
                        .into_iter()
                        .flatten()
                        .filter(|(person, _)| match person {
                            None => true,
                            Some(id) => ids.contains(&id.as_str()),
                        })
                        .map(|(_, t)| &**t),
                ))
            }
            other => Err(format!("unknown check `{other}`")),
        }
    }
}

/// The treasury's ledger: one settlement or refusal per award id, for ever.
pub struct Treasury {
    /// Each award's answer, and the ledger batch that holds it (0: no ledger file).
    entries: Mutex<HashMap<String, (TreasuryReply, u64)>>,
    ledger: Option<Ledger>,
    next: AtomicU64,
}

/// The ledger file, written by group commit: the lines of payments that arrive while one
/// write-and-sync is under way wait for the next one, together, and each payment is answered
/// once its line is synced. (One sync per payment, under one lock, capped the simulated
/// treasury at the disk's sync rate — ~1,000 a second here — and was 1.4% of the pipeline's
/// CPU under `huiqi loadgen`.)
struct Ledger {
    file: std::fs::File,
    state: Mutex<LedgerState>,
    synced: std::sync::Condvar,
}

#[derive(Default)]
struct LedgerState {
    /// Lines of the batch being gathered.
    lines: String,
    /// The number of the batch being gathered (the first is 1).
    open: u64,
    /// Batches up to this one are in the file and synced.
    synced: u64,
    /// Whether a payment is writing a batch now.
    writing: bool,
}

impl Ledger {
    /// Queues a line; returns its batch.
    fn append(&self, line: &str) -> u64 {
        let mut st = self.state.lock().expect("ledger lock");
        st.lines.push_str(line);
        st.lines.push('\n');
        st.open
    }

    /// Returns once batch `batch` is synced, writing the batch being gathered when no one else
    /// is writing one.
    fn wait_synced(&self, batch: u64) {
        let mut st = self.state.lock().expect("ledger lock");
        while st.synced < batch {
            if st.writing {
                st = self.synced.wait(st).expect("ledger lock");
                continue;
            }
            st.writing = true;
            let lines = std::mem::take(&mut st.lines);
            let writing = st.open;
            st.open += 1;
            drop(st);
            let written = (&self.file)
                .write_all(lines.as_bytes())
                .and_then(|_| self.file.sync_data());
            if let Err(e) = written {
                // As before group commit: the simulator answers anyway (its ledger is a test
                // fixture, not a bank); the error says which file failed.
                tracing::error!(error = %e, "the simulated treasury's ledger could not be written");
            }
            st = self.state.lock().expect("ledger lock");
            st.writing = false;
            st.synced = writing;
            self.synced.notify_all();
        }
    }
}

/// A ledger line.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct LedgerEntry {
    pub award_id: String,
    pub amount: huiqi_events::Money,
    pub reply: TreasuryReply,
}

/// Reads a ledger file (for tests and the demo's payment count).
pub fn read_ledger(path: &Path) -> Vec<LedgerEntry> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

impl Treasury {
    pub fn open(path: Option<&Path>) -> Result<Self, ProvidersError> {
        let mut entries = HashMap::new();
        let ledger = match path {
            None => None,
            Some(p) => {
                for e in read_ledger(p) {
                    entries.insert(e.award_id, (e.reply, 0));
                }
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|source| ProvidersError::Io {
                        path: p.display().to_string(),
                        source,
                    })?;
                Some(Ledger {
                    file,
                    state: Mutex::new(LedgerState {
                        open: 1,
                        ..Default::default()
                    }),
                    synced: std::sync::Condvar::new(),
                })
            }
        };
        let next = AtomicU64::new(entries.len() as u64 + 1);
        Ok(Treasury {
            entries: Mutex::new(entries),
            ledger,
            next,
        })
    }

    /// Settles (or refuses) `req` once: a repeated award id gets the first answer. Answers only
    /// once the answer is synced to the ledger file (when there is one).
    pub fn pay(&self, req: &TreasuryPay, refusals: &HashMap<String, String>) -> TreasuryReply {
        let mut entries = self.entries.lock().expect("ledger lock");
        let (reply, batch) = match entries.get(&req.award_id) {
            Some(done) => done.clone(),
            None => {
                let reply = match refusals.get(&req.bank_account) {
                    Some(reason) => TreasuryReply {
                        status: TreasuryStatus::Refused,
                        bank_reference: None,
                        reason: Some(reason.clone()),
                    },
                    None => TreasuryReply {
                        status: TreasuryStatus::Settled,
                        bank_reference: Some(format!(
                            "BR{:010}",
                            self.next.fetch_add(1, Ordering::SeqCst)
                        )),
                        reason: None,
                    },
                };
                // Queued while the entries are locked: the file's order is the answers' order.
                let batch = match &self.ledger {
                    Some(ledger) => ledger.append(
                        &serde_json::to_string(&LedgerEntry {
                            award_id: req.award_id.clone(),
                            amount: req.amount,
                            reply: reply.clone(),
                        })
                        .expect("serializes"),
                    ),
                    None => 0,
                };
                entries.insert(req.award_id.clone(), (reply.clone(), batch));
                (reply, batch)
            }
        };
        drop(entries);
        // A repeated request waits too: it must not hear of a payment the file may yet lose.
        if let Some(ledger) = &self.ledger {
            ledger.wait_synced(batch);
        }
        reply
    }
}

pub struct App {
    client: async_nats::Client,
    fixtures: Arc<Fixtures>,
    treasury: Arc<Treasury>,
    settings: Settings,
}

pub async fn build(settings: Settings) -> Result<App, ProvidersError> {
    let fixtures = Arc::new(Fixtures::load(&settings.fixtures_dir)?);
    let treasury = Arc::new(Treasury::open(settings.ledger_path.as_deref())?);
    let client = settings
        .nats
        .connect("huiqi-providers")
        .await
        .map_err(|e| ProvidersError::Nats(e.to_string()))?;
    Ok(App {
        client,
        fixtures,
        treasury,
        settings,
    })
}

impl App {
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ProvidersError> {
        let nats = |e: &dyn std::fmt::Display| ProvidersError::Nats(e.to_string());
        let mut checks = self
            .client
            .queue_subscribe(
                format!("{}.*", subjects::CHECKS_PREFIX),
                SERVICE.to_string(),
            )
            .await
            .map_err(|e| nats(&e))?;
        let mut pay = self
            .client
            .queue_subscribe(subjects::TREASURY_PAY, SERVICE.to_string())
            .await
            .map_err(|e| nats(&e))?;
        self.client.flush().await.map_err(|e| nats(&e))?;
        let counter = Arc::new(AtomicU64::new(0));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(msg) = checks.next() => {
                    let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
                    let s = &self.settings;
                    if s.drop_every > 0 && n % s.drop_every == 0 {
                        continue;
                    }
                    let fail = s.error_every > 0 && n % s.error_every == 0;
                    let (client, fixtures, latency) = (self.client.clone(), self.fixtures.clone(), s.latency);
                    tokio::spawn(async move {
                        let Some(reply_to) = msg.reply else { return };
                        let check = msg.subject.as_str().rsplit('.').next().unwrap_or("").to_string();
                        let body: String = if fail {
                            json!({ "error": "injected provider failure" }).to_string()
                        } else {
                            match serde_json::from_slice::<Value>(&msg.payload) {
                                Ok(req) => fixtures.answer(&check, &req).unwrap_or_else(|e| json!({ "error": e }).to_string()),
                                Err(e) => json!({ "error": format!("unreadable request: {e}") }).to_string(),
                            }
                        };
                        if !latency.is_zero() {
                            tokio::time::sleep(latency).await;
                        }
                        let _ = client.publish(reply_to, body.into_bytes().into()).await;
                    });
                }
                Some(msg) = pay.next() => {
                    let (client, fixtures, treasury) = (self.client.clone(), self.fixtures.clone(), self.treasury.clone());
                    tokio::spawn(async move {
                        let Some(reply_to) = msg.reply else { return };
                        let body = match serde_json::from_slice::<TreasuryPay>(&msg.payload) {
                            // The ledger syncs each payment to disk: do it on the blocking pool,
                            // not on a runtime worker.
                            Ok(req) => match tokio::task::spawn_blocking(move || treasury.pay(&req, &fixtures.refusals)).await {
                                Ok(reply) => serde_json::to_value(reply).expect("serializes"),
                                Err(e) => json!({ "error": format!("ledger task failed: {e}") }),
                            },
                            Err(e) => json!({ "error": format!("unreadable payment: {e}") }),
                        };
                        let _ = client.publish(reply_to, serde_json::to_vec(&body).expect("serializes").into()).await;
                    });
                }
            }
        }
        let _ = self.client.flush().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pay(award: &str, account: &str) -> TreasuryPay {
        TreasuryPay {
            award_id: award.into(),
            payee_uscc: "91330302000001015N".into(),
            bank_account: account.into(),
            amount: "1000.00".parse().unwrap(),
        }
    }

    #[test]
    fn payments_at_once_are_each_in_the_ledger_once_and_answered_the_same_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let treasury = Arc::new(Treasury::open(Some(&path)).unwrap());
        let refusals: Arc<HashMap<String, String>> =
            Arc::new([("6222-closed".to_string(), "account closed".to_string())].into());
        // 8 threads, 50 awards each, every award asked for twice (a payout retrying).
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (treasury, refusals, path) = (treasury.clone(), refusals.clone(), path.clone());
                std::thread::spawn(move || {
                    (0..100)
                        .map(|i| {
                            let award = format!("A-{t}-{}", i / 2);
                            let account = if i % 20 == 0 {
                                "6222-closed"
                            } else {
                                "6222-open"
                            };
                            let reply = treasury.pay(&pay(&award, account), &refusals);
                            // Answered only once its line is in the file.
                            assert!(std::fs::read_to_string(&path)
                                .unwrap()
                                .contains(&format!("\"award_id\":\"{award}\"")));
                            (award, reply)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let answers: Vec<(String, TreasuryReply)> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        // Every answer was synced before it was given: the file holds each award once, with
        // the answer its requests heard (both of them).
        let ledger = read_ledger(&path);
        assert_eq!(ledger.len(), 400);
        let by_award: HashMap<&str, &TreasuryReply> = ledger
            .iter()
            .map(|e| (e.award_id.as_str(), &e.reply))
            .collect();
        assert_eq!(by_award.len(), 400, "an award written twice");
        for (award, reply) in &answers {
            assert_eq!(by_award[award.as_str()], reply, "{award}");
        }
        let refs: std::collections::HashSet<_> = ledger
            .iter()
            .filter_map(|e| e.reply.bank_reference.clone())
            .collect();
        let refused = ledger
            .iter()
            .filter(|e| e.reply.status == TreasuryStatus::Refused)
            .count();
        assert_eq!(refused, 40);
        assert_eq!(refs.len(), 360, "bank references are unique");
        // A restarted treasury answers from its ledger and writes nothing more.
        drop(treasury);
        let again = Treasury::open(Some(&path)).unwrap();
        let (award, first) = &answers[7];
        assert_eq!(&again.pay(&pay(award, "6222-open"), &refusals), first);
        let fresh = again.pay(&pay("A-new", "6222-open"), &refusals);
        assert_eq!(read_ledger(&path).len(), 401);
        assert!(!refs.contains(fresh.bank_reference.as_ref().unwrap()));
    }
}
