//! `huiqi loadgen`: the whole pipeline in one process on a private, authenticated nats-server,
//! fed generated M1 claims of qualifying persons (with matching fixtures), measured from
//! outside.
//!
//! Two ways to load it:
//! - **all at once** (default): every application published as fast as JetStream acks them
//!   (1,000 acks in flight) — the pipeline's throughput;
//! - **open loop** (`--rate R --duration S`): applications published at a fixed rate, each at
//!   its intended time whether or not earlier ones settled, and every latency measured from
//!   that intended time, so queueing is not hidden (no coordinated omission).
//!
//! Settlements are read back from the stream with an ordered consumer, and each one's settle
//! time is the server's storage timestamp, so the figures do not depend on how fast this
//! command reads. After the run it reads the whole stream once more to count messages and bytes
//! per claim per service, sums each service's log, and reads the peak RSS of this process and
//! of its nats-server.
//!
//! `--probe` measures the machine's ceiling in the same run with the same message sizes: raw
//! JetStream publishes (1,000 acks in flight), raw pull-consume with acks (batches of 500), and
//! sled appends in groups of 500 with a flush per group — so the pipeline's figure is reported
//! as a fraction of what the machine allows.

use crate::gen;
use crate::pipeline::{Pipeline, UpSettings};
use crate::HuiqiError;
use futures_util::StreamExt;
use huiqi_events::{types, Envelope};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How to load the pipeline.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    pub applications: usize,
    pub persons: usize,
    /// Open loop: claims per second (None: all at once).
    pub rate: Option<f64>,
    pub timeout: Duration,
    pub probe: bool,
    /// Nodes of the private NATS (1, or a cluster of 3 or 5 with the stream at R3).
    pub cluster: usize,
    /// Partitions of verification, award and payout, each a worker of its own in this one
    /// process (award then takes every cross-partition count in the replicated bucket).
    pub partitions: u16,
}

/// What one service put on the stream and in its log, per claim.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceFigures {
    pub stream_messages_per_claim: f64,
    pub stream_bytes_per_claim: f64,
    pub log_records_per_claim: f64,
    pub log_bytes_per_claim: f64,
}

/// The machine's ceiling with the pipeline's message sizes.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub message_bytes: usize,
    pub jetstream_publish_per_second: f64,
    pub jetstream_consume_ack_per_second: f64,
    pub sled_appends_per_second: f64,
    /// The pipeline's stream messages per second as a share of the publish ceiling.
    pub pipeline_share_of_publish: f64,
    /// The award log's appends per second as a share of the sled ceiling.
    pub pipeline_share_of_sled: f64,
}

/// Figures printed by `huiqi loadgen` (and written with `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub mode: String,
    pub applications: usize,
    pub persons_per_application: usize,
    /// Claims that reached their end: paid, payment failed, or award rejected.
    pub settled: usize,
    pub rejected: usize,
    pub payment_failed: usize,
    pub submit_seconds: f64,
    pub total_seconds: f64,
    pub claims_per_second: f64,
    pub person_checks_per_second: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    /// Per second of intended submit time: (second, claims, worst latency in ms). Shows
    /// whether the tail is spread out or a few stalls.
    pub latency_by_second: Vec<(u64, usize, f64)>,
    pub stream_messages_per_claim: f64,
    /// Where the time goes: per stage (the portal's intended submit → intake's last event for
    /// the claim → verification's → award's → payout's), p50 and p99 in ms, from the stream's
    /// own timestamps.
    pub stages: Vec<(String, f64, f64)>,
    pub per_service: BTreeMap<String, ServiceFigures>,
    pub peak_rss_mb_huiqi: f64,
    /// Of this process: the peak of the set-up (applications and fixtures generated, the
    /// provider simulator loaded with them), what was resident at the first submit, and the
    /// peak from then to the end (Linux: the peak is reset through `/proc/self/clear_refs`;
    /// where it cannot be, the run's peak is the whole process's). What the run adds to the
    /// resident size at its start is what processing the claims held.
    pub peak_rss_mb_setup: f64,
    pub rss_mb_at_first_submit: f64,
    pub peak_rss_mb_run: f64,
    pub peak_rss_mb_nats_server: f64,
    /// CPU time (user + system) per claim from the first submit to the last end read, ms: this
    /// process (services, simulator, generator, the reading of ends) and the nats-servers. On
    /// a shared machine claims/s moves with whatever else runs; CPU per claim much less, so
    /// it is the figure that shows whether a change made the pipeline cheaper.
    pub cpu_ms_per_claim_huiqi: f64,
    pub cpu_ms_per_claim_nats_server: f64,
    /// Cores kept busy over that time (this process and the nats-servers).
    pub cores_busy: f64,
    pub probe: Option<Probe>,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "mode                 {} — {} × {} persons (M1, every person qualifying)",
            self.mode, self.applications, self.persons_per_application
        )?;
        writeln!(
            f,
            "ended                {} (paid {}, payment failed {}, award rejected {})",
            self.settled,
            self.settled - self.rejected - self.payment_failed,
            self.payment_failed,
            self.rejected
        )?;
        writeln!(f, "submit phase         {:.2} s", self.submit_seconds)?;
        writeln!(f, "first submit → last settle {:.2} s", self.total_seconds)?;
        writeln!(f, "claims/s             {:.1}", self.claims_per_second)?;
        writeln!(f, "person-checks/s      {:.0}   (4 per-person checks: social_insurance, presence, residence_permit, telecom)", self.person_checks_per_second)?;
        writeln!(f, "submit→settled p50   {:.0} ms", self.latency_p50_ms)?;
        writeln!(f, "submit→settled p99   {:.0} ms", self.latency_p99_ms)?;
        writeln!(f, "submit→settled max   {:.0} ms", self.latency_max_ms)?;
        let mut worst = self.latency_by_second.clone();
        worst.sort_by(|a, b| b.2.total_cmp(&a.2));
        let slow = self
            .latency_by_second
            .iter()
            .filter(|s| s.2 > 1000.0)
            .count();
        writeln!(
            f,
            "seconds with a claim over 1 s: {slow} of {}; worst: {}",
            self.latency_by_second.len(),
            worst
                .iter()
                .take(3)
                .map(|(s, _, ms)| format!("t+{s}s {ms:.0} ms"))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        writeln!(
            f,
            "per stage p50/p99    {}",
            self.stages
                .iter()
                .map(|(s, p50, p99)| format!("{s} {p50:.0}/{p99:.0} ms"))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        writeln!(
            f,
            "stream messages      {:.2} per claim",
            self.stream_messages_per_claim
        )?;
        writeln!(
            f,
            "per service (per claim): stream msgs, stream bytes, log records, log bytes"
        )?;
        for (s, x) in &self.per_service {
            writeln!(
                f,
                "  {s:<13} {:>6.2} {:>9.0} {:>6.2} {:>9.0}",
                x.stream_messages_per_claim,
                x.stream_bytes_per_claim,
                x.log_records_per_claim,
                x.log_bytes_per_claim
            )?;
        }
        writeln!(
            f,
            "peak RSS             {:.0} MB (services, simulator, generator) + {:.0} MB (nats-server, every node)",
            self.peak_rss_mb_huiqi, self.peak_rss_mb_nats_server
        )?;
        writeln!(
            f,
            "  of this process:   set-up peak {:.0} MB (generated load, simulator's fixtures), {:.0} MB at the first submit, {:.0} MB peak while running",
            self.peak_rss_mb_setup, self.rss_mb_at_first_submit, self.peak_rss_mb_run
        )?;
        writeln!(
            f,
            "CPU per claim        {:.2} ms (services, simulator, generator) + {:.2} ms (nats-server); {:.2} cores busy",
            self.cpu_ms_per_claim_huiqi, self.cpu_ms_per_claim_nats_server, self.cores_busy
        )?;
        if let Some(p) = &self.probe {
            writeln!(f, "ceiling probe (messages of {} bytes):", p.message_bytes)?;
            writeln!(
                f,
                "  JetStream publish, 1,000 acks in flight   {:>9.0} msg/s",
                p.jetstream_publish_per_second
            )?;
            writeln!(
                f,
                "  JetStream pull-consume + ack, batch 500   {:>9.0} msg/s",
                p.jetstream_consume_ack_per_second
            )?;
            writeln!(
                f,
                "  sled appends, one flush per 500           {:>9.0} rec/s",
                p.sled_appends_per_second
            )?;
            writeln!(
                f,
                "  the pipeline used {:.1}% of the publish ceiling and {:.1}% of the sled ceiling (award log)",
                p.pipeline_share_of_publish * 100.0,
                p.pipeline_share_of_sled * 100.0
            )?;
        }
        Ok(())
    }
}

/// The stages a claim passes, by the service that publishes them.
const STAGES: [&str; 4] = ["intake", "verification", "award", "payout"];

/// The service a stream subject belongs to (who published it).
fn producer(subject: &str) -> &'static str {
    if subject == huiqi_events::subjects::APPLICATIONS_SUBMITTED {
        "portal"
    } else if subject.starts_with("huiqi.intake.")
        || subject.starts_with(huiqi_events::subjects::CLAIM_OPENED)
    {
        "intake"
    } else if subject.starts_with("huiqi.internal.verification.") {
        "verification"
    } else if subject.starts_with("huiqi.awards.")
        || subject.starts_with("huiqi.entitlements.")
        || subject.starts_with(huiqi_events::subjects::PAYMENT_ORDERED)
    {
        "award"
    } else if subject.starts_with("huiqi.payouts.") {
        "payout"
    } else {
        "other"
    }
}

/// Peak resident set size of a process, MB (Linux `VmHWM`).
fn peak_rss_mb(pid: &str) -> f64 {
    status_mb(pid, "VmHWM:")
}

/// A size line of `/proc/<pid>/status` (`VmHWM:`, `VmRSS:`), MB; zero where it cannot be read.
fn status_mb(pid: &str, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field)).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// CPU time a process has used so far (user + system, all its threads), from `/proc/<pid>/stat`
/// (fields 14 and 15, in USER_HZ ticks: 100 a second on Linux); zero where it cannot be read.
fn cpu_seconds(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // The command name (field 2) is in parentheses and may hold spaces.
            let rest = &s[s.rfind(')')? + 1..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // `rest` starts at field 3.
            let utime = fields.get(11)?.parse::<f64>().ok()?;
            let stime = fields.get(12)?.parse::<f64>().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

fn nats(e: &dyn std::fmt::Display) -> HuiqiError {
    HuiqiError::Nats(e.to_string())
}

/// Runs the load and measures it; see the module documentation.
pub async fn run(settings: &LoadSettings, data_dir: &Path) -> Result<LoadReport, HuiqiError> {
    let n = settings.applications;
    let persons = settings.persons;
    let mut fx = gen::Fixtures::default();
    let mut events = Vec::with_capacity(n);
    for i in 0..n {
        let app = gen::m1_application(
            &mut fx,
            &format!("LG-{i:07}"),
            &gen::uscc(10_000 + i as u64),
            (i * persons) as u64,
            persons,
            0,
        );
        let e = Envelope::new(
            "loadgen",
            types::APPLICATION_SUBMITTED,
            &app.application_id,
            &app,
        )
        .expect("serializes");
        // Kept as the bytes to send: ten thousand applications as JSON trees would weigh more
        // than the pipeline itself.
        events.push((
            e.id.clone(),
            huiqi_intake::claim_id_for(&e.subject),
            e.encode(),
        ));
    }
    let fixtures = data_dir.join("fixtures");
    fx.write(&fixtures)
        .map_err(|e| HuiqiError::Io(fixtures.display().to_string(), e))?;
    drop(fx);
    let mut up = UpSettings::new(&data_dir.join("run"), Some(&fixtures));
    up.cluster = settings.cluster;
    up.stream.partitions = settings.partitions;
    let mut pipeline = Pipeline::start(&up).await?;
    let nats_pids: Vec<u32> = match pipeline.cluster() {
        Some(c) => c.nodes().iter().filter_map(|n| n.pid()).collect(),
        None => pipeline
            .server()
            .and_then(|s| s.pid())
            .into_iter()
            .collect(),
    };
    let client = pipeline
        .admin()
        .connect("huiqi-loadgen")
        .await
        .map_err(|e| nats(&e))?;
    let js = async_nats::jetstream::new(client.clone());

    // Submit: all at once, or at the intended times of an open loop.
    let mut intended: HashMap<String, SystemTime> = HashMap::with_capacity(n);
    let nats_cpu = || {
        nats_pids
            .iter()
            .map(|p| cpu_seconds(&p.to_string()))
            .sum::<f64>()
    };
    // In this order, the peak is at least the size read just before it.
    let rss_mb_at_first_submit = status_mb("self", "VmRSS:");
    let peak_rss_mb_setup = peak_rss_mb("self");
    // "5" resets the peak to the current size (Linux 4.0 and later).
    let peak_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let cpu_start = (cpu_seconds("self"), nats_cpu());
    let started = Instant::now();
    let wall_start = SystemTime::now();
    match settings.rate {
        None => {
            let mut acks = futures_util::stream::FuturesUnordered::new();
            for (id, claim, bytes) in &events {
                intended.insert(claim.clone(), SystemTime::now());
                acks.push(submit(&js, id, bytes).await?);
                while acks.len() >= 1000 {
                    if let Some(r) = acks.next().await {
                        r?;
                    }
                }
            }
            while let Some(r) = acks.next().await {
                r?;
            }
        }
        Some(rate) => {
            // Every 10 ms, publish whatever is due by now; a late tick sends more, never fewer.
            let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let mut next = 0usize;
            let mut acks = futures_util::stream::FuturesUnordered::new();
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while next < events.len() {
                tick.tick().await;
                let due = ((started.elapsed().as_secs_f64() / interval.as_secs_f64()) as usize + 1)
                    .min(events.len());
                while next < due {
                    let (id, claim, bytes) = &events[next];
                    let at = wall_start + interval * next as u32;
                    intended.insert(claim.clone(), at);
                    acks.push(submit(&js, id, bytes).await?);
                    next += 1;
                }
                while let Some(Some(r)) = futures_util::FutureExt::now_or_never(acks.next()) {
                    r?;
                }
            }
            while let Some(r) = acks.next().await {
                r?;
            }
        }
    }
    drop(events);
    let submit_seconds = started.elapsed().as_secs_f64();
    // A claim's end, read from the stream's start: its payment settled or failed, or its
    // award rejected (nothing to pay). The readers are made only now: made before the submit
    // phase and left unread through it, they sat idle until their heartbeats lapsed (the
    // first end was read ~60 s after the submit phase of an 18,000-claim open-loop run).
    let mut ends = Vec::new();
    for subject in [
        huiqi_events::subjects::PAYOUTS_SETTLED.to_string(),
        huiqi_events::subjects::PAYOUTS_FAILED.to_string(),
        format!("{}.>", huiqi_events::subjects::AWARDS_REJECTED_PREFIX),
    ] {
        let consumer = huiqi_bus::setup::ordered_reader(&js, &subject)
            .await
            .map_err(|e| nats(&e))?;
        ends.push(consumer.messages().await.map_err(|e| nats(&e))?);
    }
    let mut settled_stream = futures_util::stream::select_all(ends);

    // Wait for every settlement (bounded by the timeout), with a progress line now and then.
    let deadline = tokio::time::Instant::now() + settings.timeout;
    let mut latencies = Vec::with_capacity(n);
    let mut by_second: BTreeMap<u64, (usize, Duration)> = BTreeMap::new();
    let mut last_settle = UNIX_EPOCH;
    let (mut rejected, mut failed) = (0usize, 0usize);
    let mut last_report = Instant::now();
    let mut last_progress = Instant::now();
    let bar = crate::progress::bar(n as u64, "claims ended");
    while latencies.len() < n {
        let msg = tokio::select! {
            m = settled_stream.next() => m,
            _ = tokio::time::sleep_until(deadline) => None,
        };
        let Some(msg) = msg else { break };
        if last_progress.elapsed() > Duration::from_secs(30) {
            tracing::warn!(
                settled = latencies.len(),
                of = n,
                "nothing ended for 30 s: see `huiqi status` (a provider or the treasury may be down)"
            );
        }
        let msg = msg.map_err(|e| nats(&e))?;
        let stored = msg
            .info()
            .map(|i| i.published.unix_timestamp_nanos())
            .map_err(|e| nats(&e))?;
        let stored = UNIX_EPOCH + Duration::from_nanos(stored.max(0) as u64);
        let Ok(env) = Envelope::decode(&msg.payload) else {
            continue;
        };
        let Some(sent) = env.data.value()["claim_id"]
            .as_str()
            .and_then(|c| intended.get(c))
        else {
            continue;
        };
        if msg
            .subject
            .starts_with(huiqi_events::subjects::AWARDS_REJECTED_PREFIX)
        {
            rejected += 1;
        } else if msg.subject.as_str() == huiqi_events::subjects::PAYOUTS_FAILED {
            failed += 1;
        }
        let latency = stored.duration_since(*sent).unwrap_or_default();
        let second = sent
            .duration_since(wall_start)
            .unwrap_or_default()
            .as_secs();
        let b = by_second.entry(second).or_insert((0usize, Duration::ZERO));
        b.0 += 1;
        b.1 = b.1.max(latency);
        latencies.push(latency);
        last_progress = Instant::now();
        bar.set_position(latencies.len() as u64);
        last_settle = last_settle.max(stored);
        if last_report.elapsed() > Duration::from_secs(5) {
            tracing::warn!(settled = latencies.len(), of = n, "loadgen progress");
            last_report = Instant::now();
        }
    }
    bar.finish_and_clear();
    drop(settled_stream);
    let cpu_used = (cpu_seconds("self") - cpu_start.0, nats_cpu() - cpu_start.1);
    let cpu_seconds_elapsed = started.elapsed().as_secs_f64();
    let total_seconds = last_settle
        .duration_since(wall_start)
        .unwrap_or_default()
        .as_secs_f64();
    let settled = latencies.len();

    // Messages and bytes per claim per service, from the whole stream.
    let mut per_service: BTreeMap<String, ServiceFigures> = BTreeMap::new();
    let mut stream_messages = 0usize;
    let mut message_bytes = 0usize;
    let mut stage_times: HashMap<String, [Option<SystemTime>; 4]> = HashMap::with_capacity(n);
    {
        let all = huiqi_bus::setup::ordered_reader(&js, ">")
            .await
            .map_err(|e| nats(&e))?;
        let pending = all.clone().info().await.map_err(|e| nats(&e))?.num_pending as usize;
        let mut msgs = all.messages().await.map_err(|e| nats(&e))?;
        while stream_messages < pending {
            let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(20), msgs.next()).await
            else {
                break;
            };
            stream_messages += 1;
            message_bytes += m.payload.len();
            let service = producer(&m.subject);
            if let (Some(stage), Ok(info)) = (STAGES.iter().position(|s| *s == service), m.info()) {
                let at = UNIX_EPOCH
                    + Duration::from_nanos(info.published.unix_timestamp_nanos().max(0) as u64);
                if let Some(claim) = Envelope::decode(&m.payload)
                    .ok()
                    .and_then(|e| e.data.value()["claim_id"].as_str().map(str::to_string))
                {
                    let t = stage_times.entry(claim).or_insert([None; 4]);
                    t[stage] = Some(t[stage].map_or(at, |x: SystemTime| x.max(at)));
                }
            }
            let s = per_service.entry(service.to_string()).or_default();
            s.stream_messages_per_claim += 1.0;
            s.stream_bytes_per_claim += m.payload.len() as f64;
        }
    }
    let mean_message = message_bytes / stream_messages.max(1);
    let probe = if settings.probe {
        Some(probe(&js, &data_dir.join("probe"), mean_message.max(64)).await?)
    } else {
        None
    };
    // Every node of a cluster (they share the machine).
    let rss_nats = nats_pids
        .iter()
        .map(|p| peak_rss_mb(&p.to_string()))
        .sum::<f64>();
    pipeline.stop().await?;
    let peak_rss_mb_run = peak_rss_mb("self");
    let rss_self = if peak_reset {
        peak_rss_mb_setup.max(peak_rss_mb_run)
    } else {
        peak_rss_mb_run
    };
    let claims = n.max(1) as f64;
    for service in ["intake", "verification", "award", "payout"] {
        let s = per_service.entry(service.to_string()).or_default();
        for p in huiqi_bus::topology::partitions_of(service, settings.partitions) {
            let log = huiqi_eventlog::EventLog::open(&p.dir(&up.data_dir.join(service)))?;
            let audit = log.audit()?;
            s.log_records_per_claim += audit.records as f64;
            s.log_bytes_per_claim += audit.bytes as f64;
        }
    }
    for s in per_service.values_mut() {
        s.stream_messages_per_claim /= claims;
        s.stream_bytes_per_claim /= claims;
        s.log_records_per_claim /= claims;
        s.log_bytes_per_claim /= claims;
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1000.0
    };
    let claims_per_second = settled as f64 / total_seconds.max(1e-9);
    let mut stages = Vec::new();
    for (i, stage) in STAGES.iter().enumerate() {
        let mut waits: Vec<Duration> = stage_times
            .iter()
            .filter_map(|(claim, t)| {
                let before = if i == 0 {
                    intended.get(claim).copied()
                } else {
                    t[i - 1]
                };
                t[i]?.duration_since(before?).ok()
            })
            .collect();
        waits.sort();
        let at = |p: f64| {
            waits
                .get(((waits.len() as f64 * p).ceil() as usize).saturating_sub(1))
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        stages.push((stage.to_string(), at(0.5), at(0.99)));
    }
    let probe = probe.map(|mut p| {
        p.pipeline_share_of_publish =
            claims_per_second * stream_messages as f64 / claims / p.jetstream_publish_per_second;
        let award_records = per_service
            .get("award")
            .map(|s| s.log_records_per_claim)
            .unwrap_or(0.0);
        p.pipeline_share_of_sled = claims_per_second * award_records / p.sled_appends_per_second;
        p
    });
    Ok(LoadReport {
        mode: format!(
            "{}{}{}",
            match settings.rate {
                None => "all at once".to_string(),
                Some(r) => format!("open loop at {r} claims/s"),
            },
            match settings.cluster {
                0 | 1 => String::new(),
                n => format!(", on a {n}-node NATS cluster (stream R3)"),
            },
            match settings.partitions {
                0 | 1 => String::new(),
                n => format!(", {n} partitions"),
            }
        ),
        applications: n,
        persons_per_application: persons,
        settled,
        rejected,
        payment_failed: failed,
        submit_seconds,
        total_seconds,
        claims_per_second,
        person_checks_per_second: (settled * persons * 4) as f64 / total_seconds.max(1e-9),
        latency_p50_ms: pct(0.50),
        latency_p99_ms: pct(0.99),
        latency_max_ms: latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
        latency_by_second: by_second
            .into_iter()
            .map(|(s, (n, worst))| (s, n, worst.as_secs_f64() * 1000.0))
            .collect(),
        stream_messages_per_claim: stream_messages as f64 / claims,
        stages,
        per_service,
        peak_rss_mb_huiqi: rss_self,
        peak_rss_mb_setup,
        rss_mb_at_first_submit,
        peak_rss_mb_run,
        peak_rss_mb_nats_server: rss_nats,
        cpu_ms_per_claim_huiqi: cpu_used.0 * 1000.0 / claims,
        cpu_ms_per_claim_nats_server: cpu_used.1 * 1000.0 / claims,
        cores_busy: (cpu_used.0 + cpu_used.1) / cpu_seconds_elapsed.max(1e-9),
        probe,
    })
}

/// The machine's ceiling with messages of `size` bytes: raw JetStream publish and
/// consume+ack on a scratch stream, and sled appends in flushed groups of 500.
async fn probe(
    js: &async_nats::jetstream::Context,
    dir: &Path,
    size: usize,
) -> Result<Probe, HuiqiError> {
    const N: usize = 50_000;
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "PROBE".into(),
            subjects: vec!["probe.>".into()],
            ..Default::default()
        })
        .await
        .map_err(|e| nats(&e))?;
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let started = Instant::now();
    let mut acks = futures_util::stream::FuturesUnordered::new();
    for i in 0..N {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("probe-{i}").as_str());
        let ack = js
            .publish_with_headers("probe.x", h, payload.clone())
            .await
            .map_err(|e| nats(&e))?;
        acks.push(std::future::IntoFuture::into_future(ack));
        while acks.len() >= 1000 {
            if let Some(r) = acks.next().await {
                r.map_err(|e| nats(&e))?;
            }
        }
    }
    while let Some(r) = acks.next().await {
        r.map_err(|e| nats(&e))?;
    }
    let publish = N as f64 / started.elapsed().as_secs_f64();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("probe".into()),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: 4000,
            ..Default::default()
        })
        .await
        .map_err(|e| nats(&e))?;
    let started = Instant::now();
    let mut msgs = consumer
        .stream()
        .max_messages_per_batch(500)
        .messages()
        .await
        .map_err(|e| nats(&e))?
        .ready_chunks(500);
    let mut got = 0;
    while got < N {
        let Some(chunk) = msgs.next().await else {
            break;
        };
        let acks = chunk
            .into_iter()
            .filter_map(Result::ok)
            .map(|m| async move { m.ack().await.map(|_| ()) });
        got += futures_util::future::join_all(acks).await.len();
    }
    let consume = got as f64 / started.elapsed().as_secs_f64();
    js.delete_stream("PROBE").await.map_err(|e| nats(&e))?;
    // sled: the event log's own append path, in flushed groups of 500.
    let log = huiqi_eventlog::EventLog::open(dir)?;
    let data = serde_json::json!({ "pad": "x".repeat(size.saturating_sub(300)) });
    let started = Instant::now();
    let mut appended = 0;
    for g in 0..(N / 500) {
        let commits: Vec<huiqi_eventlog::Commit> = (0..500)
            .map(|i| huiqi_eventlog::Commit {
                inbox_id: Some(format!("probe-{g}-{i}")),
                events: vec![huiqi_eventlog::Pending::local(
                    Envelope::derived(
                        "probe",
                        types::CHECK_RECORDED,
                        "C-probe",
                        &data,
                        "probe",
                        &format!("{g}:{i}"),
                    )
                    .expect("serializes"),
                )],
            })
            .collect();
        log.commit(&commits)?;
        appended += 500;
    }
    let sled = appended as f64 / started.elapsed().as_secs_f64();
    Ok(Probe {
        message_bytes: size,
        jetstream_publish_per_second: publish,
        jetstream_consume_ack_per_second: consume,
        sled_appends_per_second: sled,
        pipeline_share_of_publish: 0.0,
        pipeline_share_of_sled: 0.0,
    })
}

/// How many times one application is sent when its ack times out (the machine saturated by
/// the pipeline it feeds can leave the stream's acks late; the stream drops a resend by its
/// `Nats-Msg-Id`, as it does for a portal's).
const SUBMIT_ATTEMPTS: u32 = 5;

/// Publishes one application now (in submission order) and returns its ack, which resends the
/// application under the same id if the ack times out.
async fn submit(
    js: &async_nats::jetstream::Context,
    id: &str,
    bytes: &[u8],
) -> Result<impl std::future::Future<Output = Result<(), HuiqiError>>, HuiqiError> {
    let publish = |js: async_nats::jetstream::Context, id: String, bytes: bytes::Bytes| async move {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", id.as_str());
        js.publish_with_headers(huiqi_events::subjects::APPLICATIONS_SUBMITTED, h, bytes)
            .await
            .map_err(|err| nats(&err))
    };
    let bytes = bytes::Bytes::copy_from_slice(bytes);
    let first = publish(js.clone(), id.to_string(), bytes.clone()).await?;
    let (js, id) = (js.clone(), id.to_string());
    Ok(async move {
        let (mut ack, mut attempt) = (first, 1);
        loop {
            match ack.await {
                Ok(_) => return Ok(()),
                Err(err)
                    if attempt < SUBMIT_ATTEMPTS
                        && err.kind()
                            == async_nats::jetstream::context::PublishErrorKind::TimedOut =>
                {
                    tracing::warn!(application_id = %id, attempt, "submit ack timed out; sending again under the same id");
                    ack = publish(js.clone(), id.clone(), bytes.clone()).await?;
                    attempt += 1;
                }
                Err(err) => return Err(nats(&err)),
            }
        }
    })
}
