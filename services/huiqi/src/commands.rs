//! The CLI's commands as library functions (the binary only parses arguments).

use crate::pipeline::{Pipeline, UpSettings};
use crate::watch::{publish_all, Watcher};

use crate::HuiqiError;
use huiqi_bus::NatsOptions;
use huiqi_eventlog::EventLog;
use huiqi_events::payloads::{Application, Facts};
use huiqi_events::Partition;
use huiqi_events::{types, Envelope};
use huiqi_policy::{History, PolicySet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Reads a file as an application: either the `data` object or a whole CloudEvent.
pub fn read_application(path: &Path) -> Result<(Application, Envelope), HuiqiError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| HuiqiError::Io(path.display().to_string(), e))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| HuiqiError::Input(format!("{}: not JSON: {e}", path.display())))?;
    let env = if value.get("specversion").is_some() {
        Envelope::decode(text.as_bytes())
            .map_err(|e| HuiqiError::Input(format!("{}: {e}", path.display())))?
    } else {
        let id = value["application_id"]
            .as_str()
            .unwrap_or("unknown")
            .to_string();
        Envelope::new("huiqi-cli", types::APPLICATION_SUBMITTED, &id, &value).expect("serializes")
    };
    let app: Application =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(env.data.get()))
            .map_err(|e| {
            HuiqiError::Input(format!(
                "{}: field `{}`: {}",
                path.display(),
                e.path(),
                e.inner()
            ))
        })?;
    Ok((app, env))
}

/// `huiqi evaluate`: the decision for an application and a facts file, as award-event data.
pub fn evaluate(
    application: &Path,
    facts: &Path,
    policy_version: Option<&str>,
    history: Option<&Path>,
    policy_dir: Option<&Path>,
) -> Result<String, HuiqiError> {
    let (app, _) = read_application(application)?;
    let text = std::fs::read_to_string(facts)
        .map_err(|e| HuiqiError::Io(facts.display().to_string(), e))?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    let facts: Facts = serde_path_to_error::deserialize(de).map_err(|e| {
        HuiqiError::Input(format!(
            "{}: field `{}`: {}",
            facts.display(),
            e.path(),
            e.inner()
        ))
    })?;
    let history: History = match history {
        None => History::default(),
        Some(p) => {
            let t = std::fs::read_to_string(p)
                .map_err(|e| HuiqiError::Io(p.display().to_string(), e))?;
            serde_json::from_str(&t)
                .map_err(|e| HuiqiError::Input(format!("{}: {e}", p.display())))?
        }
    };
    let policies = PolicySet::load(policy_dir).map_err(|e| HuiqiError::Input(e.to_string()))?;
    let policy = match policy_version {
        Some(v) => policies
            .get(v)
            .map_err(|e| HuiqiError::Input(e.to_string()))?,
        None => policies
            .for_application(&app)
            .map_err(|e| HuiqiError::Input(e.to_string()))?,
    };
    let claim_id = huiqi_intake::claim_id_for(&app.application_id);
    let e = huiqi_policy::evaluate(policy, &claim_id, &app, &facts, &history);
    Ok(serde_json::to_string_pretty(&e.decision).expect("serializes"))
}

/// One service log's audit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogAudit {
    pub service: String,
    pub path: String,
    /// False when the data dir holds no log for this service.
    pub present: bool,
    pub records: u64,
    pub bytes: u64,
    pub head_hash: String,
    pub problems: Vec<String>,
}

/// Recomputes the hash chain of every service log under `data_dir` (a spinner on a terminal).
pub fn audit_logs(data_dir: &Path) -> Result<Vec<LogAudit>, HuiqiError> {
    existing_dir(data_dir)?;
    if !SERVICES.iter().any(|s| service_dir(data_dir, s).is_dir()) {
        return Err(HuiqiError::NotFound(format!(
            "{} holds no service log (intake/, verification/, award/ or payout/)",
            data_dir.display()
        )));
    }
    let mut out = Vec::new();
    for service in SERVICES {
        // A split service: one line per partition's log (`award-p1`).
        for (partition, dir) in partition_dirs(&service_dir(data_dir, service)) {
            let name = partition.durable(service);
            let mut a = LogAudit {
                service: name.clone(),
                path: dir.display().to_string(),
                present: dir.exists(),
                records: 0,
                bytes: 0,
                head_hash: String::new(),
                problems: Vec::new(),
            };
            if a.present {
                let spinner = crate::progress::spinner(&format!("auditing {name}"));
                let log = open_log(&dir)?;
                let r = log.audit()?;
                spinner.finish_and_clear();
                a.records = r.records;
                a.bytes = r.bytes;
                a.head_hash = r.head_hash;
                a.problems = r.problems;
            }
            out.push(a);
        }
    }
    Ok(out)
}

/// `huiqi audit`: [`audit_logs`] as text, and whether every chain is intact.
pub fn audit(data_dir: &Path) -> Result<(String, bool), HuiqiError> {
    let logs = audit_logs(data_dir)?;
    Ok((
        render_audit(&logs),
        logs.iter().all(|a| a.problems.is_empty()),
    ))
}

/// Audited logs as text, a line per log and one per problem (at most 20 each).
pub fn render_audit(logs: &[LogAudit]) -> String {
    let mut out = String::new();
    for a in logs {
        if !a.present {
            out.push_str(&format!("{:<13} no log at {}\n", a.service, a.path));
            continue;
        }
        out.push_str(&format!(
            "{:<13} {:>8} records {:>12} bytes  head {}  {}\n",
            a.service,
            a.records,
            a.bytes,
            &a.head_hash[..16.min(a.head_hash.len())],
            if a.problems.is_empty() {
                "chain intact".to_string()
            } else {
                format!("{} PROBLEMS", a.problems.len())
            }
        ));
        for p in a.problems.iter().take(20) {
            out.push_str(&format!("    {p}\n"));
        }
    }
    out
}

/// Where the offline tools find `service`'s log: `DATA_DIR/<service>`, unless the operator
/// named another directory for it with `--log-dir SERVICE=DIR` (deployments with one data
/// directory per service, as in docker-compose.yml and the systemd units).
pub fn service_dir(data_dir: &Path, service: &str) -> PathBuf {
    LOG_DIRS
        .get()
        .and_then(|m| m.get(service).cloned())
        .unwrap_or_else(|| data_dir.join(service))
}

static LOG_DIRS: std::sync::OnceLock<std::collections::BTreeMap<String, PathBuf>> =
    std::sync::OnceLock::new();

/// Sets the `--log-dir` overrides for this process (once; the command line's).
pub fn set_log_dirs(dirs: &[(String, PathBuf)]) -> Result<(), HuiqiError> {
    for (s, _) in dirs {
        if !SERVICES.contains(&s.as_str()) {
            return Err(HuiqiError::Input(format!(
                "--log-dir {s}=…: not a service (one of {})",
                SERVICES.join(", ")
            )));
        }
    }
    let _ = LOG_DIRS.set(dirs.iter().cloned().collect());
    Ok(())
}

/// A directory the command reads must exist (opening a sled log would create it).
/// Opens one service's log for the offline tools. A split service keeps one log per partition
/// (`<dir>/p<i>`); opening `<dir>` itself would create an empty log there and report nothing,
/// so that is refused with the way to name one partition's log. (Tools over every partition
/// at once are docs/SCALING.md's step 5, not built.)
pub fn open_log(dir: &Path) -> Result<EventLog, HuiqiError> {
    if holds_partitions(dir) {
        return Err(HuiqiError::Input(format!(
            "{} holds a partitioned service's logs (p0, p1, …), one per partition; the offline tools read one log at a time: name one with --log-dir SERVICE={}/p<i>",
            dir.display(),
            dir.display()
        )));
    }
    Ok(EventLog::open(dir)?)
}

fn existing_dir(dir: &Path) -> Result<(), HuiqiError> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(HuiqiError::NotFound(format!(
            "no directory {}",
            dir.display()
        )))
    }
}

/// Whether a service directory holds a split service's logs (`p0`, `p1`, …) rather than one.
fn holds_partitions(dir: &Path) -> bool {
    dir.join("p0").is_dir() && !dir.join("db").exists()
}

/// The logs of a service directory, each with its partition: the directory itself
/// ([`Partition::ONLY`]), or — for a split service — each partition's `p<i>`, in order (their
/// names and directories as `huiqi_events::Partition` gives them).
pub fn partition_dirs(dir: &Path) -> Vec<(Partition, PathBuf)> {
    if !holds_partitions(dir) {
        return vec![(Partition::ONLY, dir.to_path_buf())];
    }
    let found = (0..huiqi_events::partition::MAX_PARTITIONS)
        .take_while(|i| dir.join(format!("p{i}")).is_dir())
        .count() as u16;
    // Split even when only `p0` is here (an instance that holds partition 0 alone).
    Partition::all(found.max(2))
        .take(found as usize)
        .map(|p| (p, p.dir(dir)))
        .collect()
}

/// Re-derives every award decision from the award log (a progress bar on a terminal). A split
/// award's partitions are replayed side by side, one thread each (a decision's history is its
/// partition's), and their reports added up.
pub fn replay_report(
    data_dir: &Path,
    policy_dir: Option<&Path>,
) -> Result<huiqi_award::ReplayReport, HuiqiError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = service_dir(data_dir, "award");
    existing_dir(&dir)?;
    let logs = partition_dirs(&dir)
        .iter()
        .map(|(_, d)| open_log(d))
        .collect::<Result<Vec<_>, _>>()?;
    let policies = PolicySet::load(policy_dir).map_err(|e| HuiqiError::Input(e.to_string()))?;
    let total = logs
        .iter()
        .map(|l| l.head().map(|h| h.0).unwrap_or(0))
        .sum();
    let bar = crate::progress::bar(total, "replaying the award log");
    let done: Vec<AtomicU64> = logs.iter().map(|_| AtomicU64::new(0)).collect();
    let started = Instant::now();
    let reports = std::thread::scope(|scope| {
        let workers: Vec<_> = logs
            .iter()
            .enumerate()
            .map(|(i, log)| {
                let (policies, done, bar) = (&policies, &done, &bar);
                scope.spawn(move || {
                    huiqi_award::replay_with_progress(log, policies, &|n| {
                        done[i].store(n, Ordering::Relaxed);
                        bar.set_position(done.iter().map(|d| d.load(Ordering::Relaxed)).sum());
                    })
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a replay thread panicked"))
            .collect::<Result<Vec<_>, _>>()
    })
    .map_err(|e| HuiqiError::Input(e.to_string()))?;
    bar.finish_and_clear();
    let mut report = huiqi_award::ReplayReport::default();
    for r in reports {
        report.merge(r);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// `huiqi replay`: [`replay_report`] as text, and whether every decision was identical.
pub fn replay(data_dir: &Path, policy_dir: Option<&Path>) -> Result<(String, bool), HuiqiError> {
    let report = replay_report(data_dir, policy_dir)?;
    let mut out = format!(
        "award log: {} events, {} decisions, {} identical on replay, {} different\n\
         replayed in {:.2} s: {:.0} events/s, {:.0} decisions/s, {:.1} MB/s of event data\n",
        report.events,
        report.decisions,
        report.identical,
        report.differences.len(),
        report.seconds,
        report.events_per_second(),
        report.decisions as f64 / report.seconds.max(1e-9),
        report.event_bytes as f64 / 1e6 / report.seconds.max(1e-9),
    );
    for (m, t) in &report.approved_total {
        out.push_str(&format!("  committed {m}: ¥{t}\n"));
    }
    if report.missing_entitlement_events > 0 {
        out.push_str(&format!(
            "  MISSING {} entitlement events after their decisions (a log rebuilt from the stream and not started since: award derives them at its next start)\n",
            report.missing_entitlement_events
        ));
    }
    for d in report.differences.iter().take(10) {
        out.push_str(&format!(
            "  DIFFERENT {}: recorded total {} status {}, replayed {}\n",
            d.claim_id,
            d.recorded["total"],
            d.recorded["status"],
            d.replayed.get("total").unwrap_or(&d.replayed)
        ));
    }
    Ok((out, report.differences.is_empty()))
}

/// The sample applications shipped under deploy/sample/applications, sorted by name.
pub fn application_files(dir: &Path) -> Result<Vec<PathBuf>, HuiqiError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| HuiqiError::Io(dir.display().to_string(), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    Ok(files)
}

/// What submitting the sample applications to a running pipeline saw.
pub struct SampleRun {
    pub watcher: Watcher,
    /// The application ids of the readable samples, in file order.
    pub ids: Vec<String>,
    /// Whether every one reached a final outcome within the time allowed.
    pub done: bool,
}

/// Submits `sample/applications` to a running pipeline as a portal does (its own login, which
/// may only publish applications; deliberately malformed files as raw bytes) and waits for
/// every outcome, watching with the admin's login.
pub async fn run_sample(
    pipeline: &Pipeline,
    sample: &Path,
    timeout: Duration,
) -> Result<SampleRun, HuiqiError> {
    let portal = pipeline
        .options("portal")
        .connect("huiqi-demo-portal")
        .await
        .map_err(|e| HuiqiError::Nats(e.to_string()))?;
    let js = async_nats::jetstream::new(portal);
    let client = pipeline
        .admin()
        .connect("huiqi-demo")
        .await
        .map_err(|e| HuiqiError::Nats(e.to_string()))?;
    let mut watcher = Watcher::start(&client, true).await?;
    let mut events = Vec::new();
    let mut ids = Vec::new();
    for f in application_files(&sample.join("applications"))? {
        match read_application(&f) {
            Ok((app, env)) => {
                ids.push(app.application_id.clone());
                events.push(env);
            }
            Err(_) => {
                let bytes =
                    std::fs::read(&f).map_err(|e| HuiqiError::Io(f.display().to_string(), e))?;
                crate::watch::publish_raw(&js, &format!("raw-{}", f.display()), bytes).await?;
            }
        }
    }
    publish_all(&js, &events, 256).await?;
    let done = watcher
        .until(timeout, |w| {
            ids.iter()
                .all(|id| w.by_application.get(id).is_some_and(|o| o.is_final()))
        })
        .await;
    // Let the entitlement events that follow the last decision arrive.
    watcher.until(Duration::from_millis(500), |_| false).await;
    Ok(SampleRun { watcher, ids, done })
}

/// `huiqi demo`: starts everything on the sample data, submits the sample applications,
/// waits for their outcomes and returns a table of claims, decisions and payouts.
pub async fn demo(sample: &Path, data_dir: &Path, timeout: Duration) -> Result<String, HuiqiError> {
    let settings = UpSettings::new(data_dir, Some(&sample.join("fixtures")));
    let pipeline = Pipeline::start(&settings).await?;
    let SampleRun { watcher, ids, done } = run_sample(&pipeline, sample, timeout).await?;
    pipeline.stop().await?;
    let ledger = huiqi_providers::read_ledger(&settings.ledger_path());
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::UTF8_BORDERS_ONLY)
        .set_header(vec![
            "application",
            "measure",
            "claim",
            "decision",
            "total",
            "payout",
            "first reason / error",
        ]);
    for id in &ids {
        let Some(o) = watcher.by_application.get(id) else {
            table.add_row(vec![id.clone(), format!("(no answer within {timeout:?})")]);
            continue;
        };
        let claim = o
            .claim_id()
            .map(|c| c[..10.min(c.len())].to_string())
            .unwrap_or_else(|| "-".into());
        let (measure, status, total, reason) = match o.decisions.first() {
            Some(d) => {
                let why = d
                    .lines
                    .iter()
                    .find(|l| !l.paid)
                    .or(d.lines.first())
                    .map(|l| l.reason.clone())
                    .unwrap_or_default();
                (
                    d.measure.clone(),
                    format!("{:?}", d.status).to_lowercase(),
                    d.total.to_string(),
                    why,
                )
            }
            None => match o.rejected.first() {
                Some(r) => (
                    "-".into(),
                    "INTAKE-REJ".into(),
                    "-".into(),
                    format!(
                        "{}: {} ({})",
                        r.errors[0].field, r.errors[0].code, r.errors[0].message
                    ),
                ),
                None => ("-".into(), "pending".into(), "-".into(), String::new()),
            },
        };
        let payout = match (o.settled.first(), o.failed.first()) {
            (Some(s), _) => format!("settled {} x{}", s.bank_reference, o.settled.len()),
            (None, Some(f)) => format!("FAILED: {}", f.reason),
            _ if status == "approved" => "pending".into(),
            _ => "-".into(),
        };
        let mut reason: String = reason.chars().take(60).collect();
        if o.entitlements > 0 {
            reason.push_str(&format!(
                "\n+{} entitlements granted (M4 data packages, M5 points)",
                o.entitlements
            ));
        }
        table.add_row(vec![
            id.clone(),
            measure,
            claim,
            status,
            total,
            payout,
            reason,
        ]);
    }
    for orphan in &watcher.orphans {
        if let Some(err) = orphan.data.value()["errors"].get(0) {
            table.add_row(vec![
                "(malformed)".to_string(),
                "-".into(),
                "-".into(),
                "INTAKE-REJ".into(),
                "-".into(),
                "-".into(),
                format!(
                    "{}: {}",
                    err["code"].as_str().unwrap_or(""),
                    err["message"]
                        .as_str()
                        .unwrap_or("")
                        .chars()
                        .take(60)
                        .collect::<String>()
                ),
            ]);
        }
    }
    let mut t = format!("{table}\n");
    let paid: huiqi_events::Money = ledger
        .iter()
        .filter(|e| e.reply.bank_reference.is_some())
        .map(|e| e.amount)
        .sum();
    t.push_str(&format!(
        "\ntreasury ledger: {} instructions, ¥{} settled; all outcomes in: {}\n",
        ledger.len(),
        paid,
        if done { "yes" } else { "NO (timed out)" }
    ));
    let (audit, clean) = audit(data_dir)?;
    t.push_str(&format!("\nhuiqi audit:\n{audit}"));
    let (replay, same) = replay(data_dir, None)?;
    t.push_str(&format!("\nhuiqi replay:\n{replay}"));
    if !done || !clean || !same {
        return Err(HuiqiError::Input(format!(
            "demo did not complete cleanly:\n{t}"
        )));
    }
    Ok(t)
}

/// `huiqi query`: asks the running pipeline for one claim's state and timeline.
pub async fn query(
    options: &NatsOptions,
    claim_id: Option<&str>,
    application_id: Option<&str>,
) -> Result<String, HuiqiError> {
    let client = options
        .connect("huiqi-query-cli")
        .await
        .map_err(|e| HuiqiError::Nats(e.to_string()))?;
    let body = match (claim_id, application_id) {
        (Some(c), _) => serde_json::json!({ "claim_id": c }),
        (None, Some(a)) => serde_json::json!({ "application_id": a }),
        (None, None) => {
            return Err(HuiqiError::Input(
                "give --claim-id or --application-id".into(),
            ))
        }
    };
    let policy = huiqi_bus::RetryPolicy {
        max_attempts: Some(3),
        ..Default::default()
    };
    let (reply, _) = huiqi_bus::request::request_json(
        &client,
        huiqi_events::subjects::QUERY_CLAIM,
        &body,
        &policy,
        &huiqi_bus::Circuit::default(),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .map_err(|e| HuiqiError::Nats(e.to_string()))?;
    if reply["state"] == "not_found" {
        return Err(HuiqiError::NotFound(format!(
            "no claim {}",
            claim_id.or(application_id).unwrap_or_default()
        )));
    }
    Ok(serde_json::to_string_pretty(&reply).expect("serializes"))
}

/// `huiqi parked`: lists the poison messages every service parked, oldest first, and with
/// `republish` sends one parked message's original bytes back to its original subject (after
/// the cause was fixed), under a new message id so the service's inbox takes it again.
pub async fn parked(
    options: &NatsOptions,
    republish: Option<u64>,
    json: bool,
) -> Result<String, HuiqiError> {
    let mut republished = false;
    // For --json: one object per entry (the original bytes are left out: they may hold
    // personal numbers; `--republish` sends them back without showing them).
    let mut entries: Vec<serde_json::Value> = Vec::new();
    let nats = |e: &dyn std::fmt::Display| HuiqiError::Nats(e.to_string());
    let client = options
        .connect("huiqi-parked")
        .await
        .map_err(|e| nats(&e))?;
    let js = async_nats::jetstream::new(client);
    let messages = huiqi_bus::setup::read_all(
        &js,
        &format!("{}.>", huiqi_events::subjects::PARKED_PREFIX),
        Duration::from_secs(10),
    )
    .await
    .map_err(|e| nats(&e))?;
    let pending = messages.len();
    let mut out = format!("{pending} parked message(s)\n");
    if pending == 0 {
        if let Some(seq) = republish {
            return Err(HuiqiError::NotFound(format!(
                "no parked message with original stream sequence {seq} (none are parked)"
            )));
        }
        return Ok(if json { "[]\n".into() } else { out });
    }
    for msg in messages {
        let Ok(env) = Envelope::decode(&msg.payload) else {
            continue;
        };
        if env.ty == types::EVENT_UNPUBLISHABLE {
            if let Ok(u) = env.data_as::<huiqi_events::payloads::EventUnpublishable>() {
                entries.push(serde_json::json!({
                    "kind": "unpublishable", "service": u.service, "log_sequence": u.log_sequence,
                    "event_type": u.event_type, "subject": u.subject, "bytes": u.bytes, "limit": u.limit,
                }));
                out.push_str(&format!(
                    "UNPUBLISHABLE  {:<13} log seq {:>8}  {} of {} ({} bytes > {})\n",
                    u.service,
                    u.log_sequence,
                    huiqi_events::escape_control(&u.event_type),
                    huiqi_events::escape_control(&u.subject),
                    u.bytes,
                    u.limit
                ));
            }
            continue;
        }
        let Ok(p) = env.data_as::<huiqi_events::payloads::MessageParked>() else {
            continue;
        };
        entries.push(serde_json::json!({
            "kind": "parked", "service": p.service, "stream_sequence": p.stream_sequence,
            "subject": p.subject, "delivered": p.delivered,
            "reason": huiqi_events::mask_digit_runs(&p.reason),
            "republished": republish == Some(p.stream_sequence),
        }));
        out.push_str(&format!(
            "original stream seq {:>8}  {:<13} {:<36} delivered {}  {}\n",
            p.stream_sequence,
            p.service,
            huiqi_events::escape_control(&p.subject),
            p.delivered,
            huiqi_events::escape_control(&huiqi_events::mask_digit_runs(&p.reason))
        ));
        if republish == Some(p.stream_sequence) {
            let mut h = async_nats::HeaderMap::new();
            h.insert(
                "Nats-Msg-Id",
                format!("republished-{}-{}", p.stream_sequence, env.id).as_str(),
            );
            if let Some(sig) = &p.signature {
                h.insert(huiqi_bus::trust::SIGNATURE_HEADER, sig.as_str());
            }
            js.publish_with_headers(p.subject.clone(), h, p.payload.clone().into_bytes().into())
                .await
                .map_err(|e| nats(&e))?
                .await
                .map_err(|e| nats(&e))?;
            out.push_str(&format!("    republished to {}\n", p.subject));
            republished = true;
        }
    }
    if let (Some(seq), false) = (republish, republished) {
        return Err(HuiqiError::NotFound(format!(
            "no parked message with original stream sequence {seq}"
        )));
    }
    if json {
        return Ok(serde_json::to_string_pretty(&entries).expect("JSON") + "\n");
    }
    Ok(out)
}

/// The four services with a log, and how each is rebuilt from the stream.
pub const SERVICES: &[&str] = &["intake", "verification", "award", "payout"];

fn restore_rules(service: &str) -> Option<&'static dyn huiqi_bus::restore::RestoreRules> {
    Some(match service {
        "intake" => &huiqi_intake::Restore,
        "verification" => &huiqi_verification::Restore {},
        "award" => &huiqi_award::Restore,
        "payout" => &huiqi_payout::Restore {},
        _ => return None,
    })
}

/// `huiqi restore`: rebuilds each named service's log under `data_dir/<service>` from the
/// stream (read with `options`, which must be able to read the whole stream: the admin),
/// checking every signature against `trust`. The services must be stopped; each target
/// directory must hold no log. In a deployment of `partitions`, a split service's partitions
/// are rebuilt one by one, each into `data_dir/<service>/p<i>` and its own consumer rewound.
pub async fn restore(
    options: &NatsOptions,
    data_dir: &Path,
    services: &[String],
    partitions: u16,
    trust: &huiqi_bus::trust::TrustStore,
) -> Result<String, HuiqiError> {
    let nats = |e: &dyn std::fmt::Display| HuiqiError::Nats(e.to_string());
    let client = options
        .connect("huiqi-restore")
        .await
        .map_err(|e| nats(&e))?;
    let js = async_nats::jetstream::new(client);
    let mut out = String::new();
    for service in services {
        let rules = restore_rules(service).ok_or_else(|| {
            HuiqiError::Input(format!(
                "unknown service `{service}` (one of {})",
                SERVICES.join(", ")
            ))
        })?;
        for partition in huiqi_bus::topology::partitions_of(service, partitions) {
            let dir = partition.dir(&data_dir.join(service));
            let name = if partition.is_split() {
                partition.durable(service)
            } else {
                service.clone()
            };
            std::fs::create_dir_all(&dir)
                .map_err(|e| HuiqiError::Io(dir.display().to_string(), e))?;
            let log = open_log(&dir)?;
            let started = Instant::now();
            let bar = crate::progress::bar(0, &format!("restoring {name}"));
            let report = huiqi_bus::restore::restore(
                &js,
                service,
                partition,
                &log,
                trust,
                rules,
                &mut |read, total| {
                    bar.set_length(total);
                    bar.set_position(read);
                    tracing::debug!(service = %name, read, total, "restoring");
                },
            )
            .await
            .map_err(|e| HuiqiError::Input(e.to_string()))?;
            bar.finish_and_clear();
            let audit = log.audit()?;
            if let Some(from) = report.first_unanswered {
                huiqi_bus::restore::rewind_consumer(&js, service, partition, from)
                    .await
                    .map_err(|e| HuiqiError::Nats(e.to_string()))?;
                out.push_str(&format!(
                    "{name:<13} consumer rewound to stream sequence {from}: inputs without an answer on the stream are delivered again\n"
                ));
            }
            out.push_str(&format!(
            "{name:<13} {} log records from {} stream messages in {:.1} s: {} it published, {} it consumed recorded, {} answered inputs marked, {} unanswered left for redelivery, {} refused signatures; chain {}\n",
            report.log_records,
            report.stream_messages,
            started.elapsed().as_secs_f64(),
            report.produced,
            report.consumed_recorded,
            report.consumed_inbox_only,
            report.unanswered_left_for_redelivery,
            report.refused_signatures,
            if audit.is_clean() { "intact" } else { "BROKEN" },
        ));
            for e in &report.refused_examples {
                out.push_str(&format!(
                    "    refused: {}\n",
                    huiqi_events::escape_control(e)
                ));
            }
        }
    }
    Ok(out)
}

/// `huiqi setup`: the admin's provisioning of the stream and every durable consumer.
pub async fn setup(
    options: &NatsOptions,
    stream: &huiqi_bus::setup::StreamSettings,
    portals: &[String],
) -> Result<String, HuiqiError> {
    let client = options
        .connect("huiqi-setup")
        .await
        .map_err(|e| HuiqiError::Nats(e.to_string()))?;
    let js = async_nats::jetstream::new(client);
    huiqi_bus::setup::provision(&js, stream)
        .await
        .map_err(|e| HuiqiError::Nats(e.to_string()))?;
    huiqi_bus::setup::provision_portals(&js, portals)
        .await
        .map_err(|e| HuiqiError::Nats(e.to_string()))?;
    Ok(format!(
        "stream {} ({} replica(s), max age {} s (0 = for ever), max bytes {}, max messages {}, duplicate window {} s, discard new) and consumers {} are in place\n",
        huiqi_bus::setup::STREAM,
        stream.replicas,
        stream.max_age_secs,
        stream.max_bytes,
        stream.max_messages,
        stream.duplicate_window_secs,
        huiqi_bus::topology::all_consumers(stream.partitions)
            .iter()
            .map(|c| c.durable.clone())
            .chain(portals.iter().map(|p| huiqi_bus::access::portal_user(p)))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// `huiqi keys generate`: a deployment's key material under `out`: a signing key per service
/// and the trust file, and an nkey per NATS user with `nats/users.env` for the server.
pub fn keys_generate(out: &Path, force: bool, portals: &[String]) -> Result<String, HuiqiError> {
    let trust = huiqi_bus::trust::KeySet::trust_path(out);
    if trust.exists() && !force {
        return Err(HuiqiError::Input(format!(
            "{} already exists: keys are not overwritten (use --force to replace them all)",
            trust.display()
        )));
    }
    let set = huiqi_bus::trust::KeySet::generate();
    set.write(out)
        .map_err(|e| HuiqiError::Input(e.to_string()))?;
    let users = huiqi_bus::access::NatsUsers::generate_for(portals);
    users
        .write(out)
        .map_err(|e| HuiqiError::Input(e.to_string()))?;
    huiqi_bus::trust::write_secret(
        &huiqi_bus::access::cluster_env_path(out),
        &huiqi_bus::access::cluster_env(),
    )
    .map_err(|e| HuiqiError::Input(e.to_string()))?;
    let mut text = format!("wrote to {}:\n", out.display());
    text.push_str("  trust.json                  which public key may produce which event types (give it to every service)\n");
    for (service, key) in &set.keys {
        text.push_str(&format!(
            "  signing/{service}.seed{:<pad$} {service}'s signing key (secret; public {})\n",
            "",
            key.public_key(),
            pad = 13usize.saturating_sub(service.len())
        ));
    }
    text.push_str("  nats/<user>.seed            each NATS user's nkey (secret): ");
    text.push_str(&users.users().join(", "));
    text.push_str("\n  nats/users.env              the users' public nkeys for deploy/nats-server.conf (not secret)\n");
    text.push_str(
        "  nats/cluster.env            route password and routes of the 3-node cluster (secret)\n",
    );
    Ok(text)
}

/// The published contract's machine-readable files, relative to `docs/contract`: the AsyncAPI
/// document and one JSON Schema per event type, reply and request (see `huiqi_events::schema`).
pub fn contract_files() -> Vec<(PathBuf, String)> {
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).expect("JSON") + "\n";
    let mut out = vec![(
        PathBuf::from("asyncapi.json"),
        pretty(&huiqi_events::schema::asyncapi()),
    )];
    for (name, v) in huiqi_events::schema::schema_files() {
        out.push((Path::new("schemas").join(name), pretty(&v)));
    }
    out
}

/// `huiqi contract --out DIR`: writes [`contract_files`] under `DIR`.
pub fn write_contract(out: &Path) -> Result<String, HuiqiError> {
    let files = contract_files();
    for (rel, text) in &files {
        let path = out.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| HuiqiError::Io(dir.display().to_string(), e))?;
        }
        std::fs::write(&path, text).map_err(|e| HuiqiError::Io(path.display().to_string(), e))?;
    }
    Ok(format!(
        "wrote the AsyncAPI document and {} schemas under {}\n",
        files.len() - 1,
        out.display()
    ))
}

/// `huiqi whatif`: every recorded claim of the award log decided again under `version`.
pub fn whatif(
    data_dir: &Path,
    policy_dir: Option<&Path>,
    version: &str,
) -> Result<huiqi_award::WhatIfReport, HuiqiError> {
    existing_dir(&service_dir(data_dir, "award"))?;
    let log = open_log(&service_dir(data_dir, "award"))?;
    let policies = PolicySet::load(policy_dir).map_err(|e| HuiqiError::Input(e.to_string()))?;
    huiqi_award::whatif(&log, &policies, version).map_err(|e| HuiqiError::Input(e.to_string()))
}

/// The what-if report for people: per measure, then each claim that changes.
pub fn render_whatif(r: &huiqi_award::WhatIfReport) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY)
        .set_header(vec![
            "measure",
            "decisions",
            "would change",
            "recorded",
            "under what-if",
            "difference",
        ]);
    for (m, d) in &r.by_measure {
        t.add_row(vec![
            m.clone(),
            d.decisions.to_string(),
            d.changed.to_string(),
            d.recorded_total.to_string(),
            d.whatif_total.to_string(),
            d.delta.to_string(),
        ]);
    }
    let mut out = format!(
        "what-if under {}: {} decisions, {} would change\n{t}\n",
        r.version,
        r.decisions,
        r.changed.len()
    );
    for c in &r.changed {
        out.push_str(&format!(
            "{} ({} {}): {:?} {} → {:?} {} (difference {})\n",
            c.claim_id,
            c.measure,
            c.application_id,
            c.recorded_status,
            c.recorded_total,
            c.whatif_status,
            c.whatif_total,
            c.delta
        ));
        for l in &c.lines {
            out.push_str(&format!("    {l}\n"));
        }
    }
    out
}

/// `huiqi supplement`: plans (and with `confirm`, writes) supplementary awards for what
/// `version` would pay more than was decided (see `huiqi_award::supplement`).
pub fn supplement(
    data_dir: &Path,
    policy_dir: Option<&Path>,
    version: &str,
    confirm: Option<&str>,
) -> Result<huiqi_award::SupplementOutcome, HuiqiError> {
    existing_dir(&service_dir(data_dir, "award"))?;
    let log = open_log(&service_dir(data_dir, "award"))?;
    let policies = PolicySet::load(policy_dir).map_err(|e| HuiqiError::Input(e.to_string()))?;
    let out = huiqi_award::supplement(&log, &policies, version, confirm)
        .map_err(|e| HuiqiError::Input(e.to_string()))?;
    if out.written > 0 {
        tracing::warn!(
            version,
            written = out.written,
            digest = %out.digest,
            "supplementary awards written to the award log; they are published and paid when award starts"
        );
    }
    Ok(out)
}

/// The supplement plan for people.
pub fn render_supplement(r: &huiqi_award::SupplementOutcome) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY)
        .set_header(vec![
            "claim",
            "measure",
            "application",
            "award id",
            "decided",
            "under the version",
            "supplement",
        ]);
    for p in &r.plan {
        t.add_row(vec![
            p.claim_id.clone(),
            p.measure.clone(),
            p.application_id.clone(),
            p.award_id.clone(),
            p.recorded_total.to_string(),
            p.total.to_string(),
            p.amount.to_string(),
        ]);
    }
    let total: huiqi_events::Money = r.plan.iter().map(|p| p.amount).sum();
    let mut out = format!(
        "supplements under {}: {} claims, ¥{} in all\n{t}\n",
        r.version,
        r.plan.len(),
        total
    );
    for (claim, why) in &r.not_supplemented {
        out.push_str(&format!("  not supplemented {claim}: {why}\n"));
    }
    if r.written > 0 {
        out.push_str(&format!(
            "written: {} supplementary awards in the award log; start award to publish and pay them\n",
            r.written
        ));
    } else if r.plan.is_empty() {
        out.push_str("nothing to supplement\n");
    } else {
        out.push_str(&format!(
            "nothing written. Stop the award service, then confirm with: --confirm {}\n",
            r.digest
        ));
    }
    out
}
