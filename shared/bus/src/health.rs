//! What an operator needs to see while the system runs: each service's health (messages
//! received and parked, its relay's state, the providers it is waiting for) answered over NATS
//! (`huiqi.health.<service>` and the NATS micro-service endpoints `$SRV.PING/INFO/STATS`),
//! and the same figures as Prometheus metrics.
//!
//! Why both: `huiqi status` and `nats micro` need nothing but the bus; dashboards and alerts
//! scrape `/metrics`. A provider outage shows in both (and at warn in the log) instead of only
//! as a growing backlog.

use async_nats::service::ServiceExt;
use futures_util::StreamExt;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// The subject a service answers health requests on.
pub fn health_subject(service: &str) -> String {
    format!("huiqi.health.{service}")
}

/// A provider (request subject) as the requests to it went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Provider {
    pub subject: String,
    pub requests: u64,
    pub failures: u64,
    /// Consecutive failures until now (0: the last request was answered).
    pub failing_for_attempts: u64,
    /// Unix seconds of the first failure of the current run of failures.
    pub failing_since: Option<u64>,
    /// The last error, digit runs masked.
    pub last_error: Option<String>,
    pub last_ok: Option<u64>,
}

/// Counters of one service.
#[derive(Debug, Default)]
pub struct Counters {
    pub received: AtomicU64,
    pub parked: AtomicU64,
    /// Messages the stream still holds for the service's consumer (from the last delivery).
    pub pending: AtomicU64,
    /// Relay: consecutive failed publish rounds (0: publishing).
    pub relay_failures: AtomicU64,
    pub relay_failing_since: AtomicU64,
}

static PROVIDERS: LazyLock<Mutex<BTreeMap<String, Provider>>> = LazyLock::new(Default::default);
static SERVICES: LazyLock<Mutex<BTreeMap<String, Arc<Counters>>>> = LazyLock::new(Default::default);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The counters of `service` (created on first use).
pub fn counters(service: &str) -> Arc<Counters> {
    SERVICES
        .lock()
        .expect("health lock")
        .entry(service.to_string())
        .or_default()
        .clone()
}

/// A provider request was answered and accepted after `elapsed`.
pub fn provider_ok(subject: &str, elapsed: Duration) {
    metrics::counter!("huiqi_provider_requests_total", "subject" => subject.to_string(), "outcome" => "ok").increment(1);
    metrics::histogram!("huiqi_provider_request_seconds", "subject" => subject.to_string())
        .record(elapsed.as_secs_f64());
    let mut all = PROVIDERS.lock().expect("health lock");
    let p = all.entry(subject.to_string()).or_default();
    p.subject = subject.to_string();
    p.requests += 1;
    p.failing_for_attempts = 0;
    p.failing_since = None;
    p.last_ok = Some(now());
}

/// A provider request failed (timeout, no responders, a refused reply).
pub fn provider_failed(subject: &str, error: &str) {
    metrics::counter!("huiqi_provider_requests_total", "subject" => subject.to_string(), "outcome" => "error").increment(1);
    let mut all = PROVIDERS.lock().expect("health lock");
    let p = all.entry(subject.to_string()).or_default();
    p.subject = subject.to_string();
    p.requests += 1;
    p.failures += 1;
    if p.failing_for_attempts == 0 {
        p.failing_since = Some(now());
    }
    p.failing_for_attempts += 1;
    p.last_error = Some(huiqi_events::mask_digit_runs(error));
}

/// The relay of `service` published (`ok`) or failed to.
pub fn relay(service: &str, ok: bool) {
    let c = counters(service);
    if ok {
        c.relay_failures.store(0, Ordering::Relaxed);
    } else if c.relay_failures.fetch_add(1, Ordering::Relaxed) == 0 {
        c.relay_failing_since.store(now(), Ordering::Relaxed);
    }
    metrics::gauge!("huiqi_relay_failing", "service" => service.to_string()).set(if ok {
        0.0
    } else {
        1.0
    });
}

/// A service's health report: what `huiqi.health.<service>` answers.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Report {
    pub service: String,
    /// `ok`, or `degraded` when a provider or the relay is failing.
    pub status: String,
    pub received: u64,
    pub parked: u64,
    pub pending: u64,
    pub relay_failing_since: Option<u64>,
    /// Log records not yet published.
    pub relay_backlog: u64,
    pub log_records: u64,
    pub providers: Vec<serde_json::Value>,
    /// The live audit of the service's log (its hash chain recomputed while it runs), once the
    /// run the request names (`{"audit_run": N}`) has finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<LiveAudit>,
    /// The live audit run this answer is about: started (or joined) by `{"audit": true}`,
    /// asked after with `{"audit_run": N}`. Absent in the answer to `{"audit_run": N}` when
    /// this instance does not know run N (it restarted since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_run: Option<u64>,
}

/// Live audits of one service's log. An audit of a large log takes longer than a service may
/// take to answer a request ([`crate::access::SERVICE_ANSWER_WINDOW`]), so a request starts one
/// (or joins the one running) and is answered at once with its run number; later requests ask
/// for that run's result. The last few results are kept.
#[derive(Default)]
struct Audits {
    last_run: u64,
    running: Option<u64>,
    done: std::collections::VecDeque<(u64, LiveAudit)>,
}

const AUDITS_KEPT: usize = 8;

/// What a health request asks for, beyond the report.
enum Ask {
    Report,
    StartAudit,
    AuditResult(u64),
}

fn ask_of(payload: &[u8]) -> Ask {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return Ask::Report;
    };
    if let Some(n) = v["audit_run"].as_u64() {
        Ask::AuditResult(n)
    } else if v["audit"] == true {
        Ask::StartAudit
    } else {
        Ask::Report
    }
}

fn audited(
    result: Result<
        Result<huiqi_eventlog::AuditReport, huiqi_eventlog::LogError>,
        tokio::task::JoinError,
    >,
) -> LiveAudit {
    let failed = |problem: String| LiveAudit {
        records: 0,
        bytes: 0,
        head_hash: String::new(),
        problems: vec![problem],
    };
    match result {
        Ok(Ok(a)) => LiveAudit {
            records: a.records,
            bytes: a.bytes,
            head_hash: a.head_hash,
            problems: a.problems,
        },
        Ok(Err(e)) => failed(format!("the log could not be read: {e}")),
        Err(e) => failed(format!("audit task failed: {e}")),
    }
}

/// Starts an audit of `log` unless one is running; the run's number.
fn start_audit(audits: &Arc<Mutex<Audits>>, log: &Arc<huiqi_eventlog::EventLog>) -> u64 {
    let mut a = audits.lock().expect("audit lock");
    if let Some(run) = a.running {
        return run;
    }
    a.last_run += 1;
    let run = a.last_run;
    a.running = Some(run);
    let (audits, log) = (audits.clone(), log.clone());
    tokio::spawn(async move {
        let result = audited(tokio::task::spawn_blocking(move || log.audit()).await);
        let mut a = audits.lock().expect("audit lock");
        a.running = None;
        a.done.push_back((run, result));
        while a.done.len() > AUDITS_KEPT {
            a.done.pop_front();
        }
    });
    run
}

/// A log's chain, audited by the running service itself (sled lets one process open a log;
/// this is how an auditor reads a live one).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LiveAudit {
    pub records: u64,
    pub bytes: u64,
    pub head_hash: String,
    pub problems: Vec<String>,
}

/// The report of `service`, whose log is `log`.
pub fn report(service: &str, log: &huiqi_eventlog::EventLog) -> Report {
    let c = counters(service);
    let last = log.head().map(|h| h.0).unwrap_or(0);
    let cursor = log.outbox_cursor().unwrap_or(0);
    let providers: Vec<Provider> = PROVIDERS
        .lock()
        .expect("health lock")
        .values()
        .filter(|p| provider_of(service, &p.subject))
        .cloned()
        .collect();
    let relay_failing = c.relay_failures.load(Ordering::Relaxed) > 0;
    let degraded = relay_failing || providers.iter().any(|p| p.failing_for_attempts > 0);
    Report {
        service: service.to_string(),
        status: if degraded { "degraded" } else { "ok" }.into(),
        received: c.received.load(Ordering::Relaxed),
        parked: c.parked.load(Ordering::Relaxed),
        pending: c.pending.load(Ordering::Relaxed),
        relay_failing_since: relay_failing.then(|| c.relay_failing_since.load(Ordering::Relaxed)),
        relay_backlog: last.saturating_sub(cursor),
        log_records: last,
        providers: providers
            .iter()
            .map(|p| serde_json::to_value(p).expect("serializes"))
            .collect(),
        audit: None,
        audit_run: None,
    }
}

/// Which request subjects a service sends (checks: verification; treasury: payout).
fn provider_of(service: &str, subject: &str) -> bool {
    match service {
        "verification" => subject.starts_with(huiqi_events::subjects::CHECKS_PREFIX),
        "payout" => subject == huiqi_events::subjects::TREASURY_PAY,
        _ => false,
    }
}

/// Answers `huiqi.health.<service>` and `$SRV.PING/INFO/STATS` (as NATS micro-service
/// `huiqi-<service>`) until `shutdown`. Not being allowed to is logged, not fatal. A split
/// service's worker also answers `huiqi.health.<service>.<index>` for its partition alone;
/// on the service's subject the workers form a queue group, so one of them answers with its
/// own partition's report (what `huiqi status` shows until it asks per partition).
pub async fn serve(
    client: async_nats::Client,
    service: String,
    partition: huiqi_events::Partition,
    log: Arc<huiqi_eventlog::EventLog>,
    shutdown: CancellationToken,
) {
    let started = client
        .service_builder()
        .description(format!("Huiqi {service} service"))
        .start(format!("huiqi-{service}"), env!("CARGO_PKG_VERSION"))
        .await;
    let svc = match started {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(service = %service, error = %e, "health endpoints not started");
            return;
        }
    };
    let endpoint = match svc.group("huiqi.health").endpoint(service.clone()).await {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(service = %service, error = %e, "health endpoint not started");
            return;
        }
    };
    let own = if partition.is_split() {
        match svc
            .group(health_subject(&service))
            .endpoint(partition.index().to_string())
            .await
        {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::warn!(service = %service, %partition, error = %e, "partition health endpoint not started");
                None
            }
        }
    } else {
        None
    };
    let mut endpoint = match own {
        Some(own) => futures_util::stream::select(endpoint, own).boxed(),
        None => endpoint.boxed(),
    };
    // Run numbers start from the clock, so a number asked after a restart of the service is
    // not mistaken for a run of the new instance.
    let audits = Arc::new(Mutex::new(Audits {
        last_run: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0),
        ..Audits::default()
    }));
    loop {
        let req = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = endpoint.next() => r,
        };
        let Some(req) = req else { break };
        let mut r = report(&service, &log);
        match ask_of(&req.message.payload) {
            Ask::Report => {}
            Ask::StartAudit => r.audit_run = Some(start_audit(&audits, &log)),
            Ask::AuditResult(run) => {
                let a = audits.lock().expect("audit lock");
                if let Some((_, result)) = a.done.iter().find(|(n, _)| *n == run) {
                    r.audit = Some(result.clone());
                    r.audit_run = Some(run);
                } else if a.running == Some(run) {
                    r.audit_run = Some(run);
                }
            }
        }
        let body = serde_json::to_vec(&r).expect("serializes");
        if let Err(e) = req.respond(Ok(body.into())).await {
            tracing::debug!(error = %e, "health reply not sent");
        }
    }
    let _ = svc.stop().await;
}

/// Starts the Prometheus exporter: `GET http://<addr>/metrics`.
pub fn serve_metrics(addr: std::net::SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("metrics endpoint on {addr}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::{ask_of, Ask};

    #[test]
    fn a_health_request_asks_for_a_report_an_audit_or_an_audits_result() {
        assert!(matches!(ask_of(b""), Ask::Report));
        assert!(matches!(ask_of(b"not json"), Ask::Report));
        assert!(matches!(ask_of(br#"{"audit": false}"#), Ask::Report));
        assert!(matches!(ask_of(br#"{"audit": "yes"}"#), Ask::Report));
        assert!(matches!(ask_of(br#"{"audit": true}"#), Ask::StartAudit));
        assert!(matches!(
            ask_of(br#"{"audit_run": 7}"#),
            Ask::AuditResult(7)
        ));
        // A result is asked by number; a malformed number is just a report.
        assert!(matches!(ask_of(br#"{"audit_run": -1}"#), Ask::Report));
        assert!(matches!(
            ask_of(br#"{"audit": true, "audit_run": 3}"#),
            Ask::AuditResult(3)
        ));
    }
}
