//! `huiqi status` and `huiqi health`: what an operator looks at first — the stream, each
//! durable consumer's backlog, each service's own health report (providers it waits for, its
//! relay) and the parked messages that need a person. As a table for people, JSON for tools.

use crate::HuiqiError;
use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use huiqi_bus::health::Report;
use huiqi_bus::NatsOptions;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    pub name: String,
    pub messages: u64,
    pub bytes: u64,
    pub first_sequence: u64,
    pub last_sequence: u64,
    /// On a cluster: the node leading the stream and each other replica's state.
    pub cluster: Option<Replication>,
}

/// Where a replicated stream lives: an operator sees a node down or behind here.
#[derive(Debug, Clone, Serialize)]
pub struct Replication {
    pub cluster: Option<String>,
    /// The node the stream's writes go through (None while one is being elected).
    pub leader: Option<String>,
    pub replicas: Vec<Replica>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Replica {
    /// The node's server name, or NATS's placeholder `Server name unknown at this time
    /// (peerID: …)` when the leader has not heard of the node since it (the leader) started:
    /// a node that died before a restarted leader came up is listed that way.
    pub name: String,
    /// The peer id NATS gave in place of a name it does not know (a hash of the server name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    pub current: bool,
    pub offline: bool,
    /// Operations it is behind the leader.
    pub lag: u64,
    /// Seconds since the leader last heard from it.
    pub active_secs: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsumerStatus {
    pub name: String,
    pub filter: Option<String>,
    /// Messages not yet delivered (the backlog).
    pub pending: Option<u64>,
    /// Delivered, not yet acked (in flight).
    pub ack_pending: Option<u64>,
    pub redelivered: Option<u64>,
    /// Every message up to this stream sequence is acked.
    pub ack_floor: Option<u64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    pub service: String,
    pub report: Option<Report>,
    /// Why there is no report (the service did not answer).
    pub error: Option<String>,
}

/// Which instance of a service works (its lease, `huiqi_bus::lease`).
#[derive(Debug, Clone, Serialize)]
pub struct LeaseStatus {
    pub service: String,
    /// The holding (or, when released, the last) instance.
    pub holder: Option<String>,
    /// `held` or `released`; None when never taken.
    pub state: Option<String>,
    /// Seconds since the last renewal, by the server's clock against this machine's.
    pub renewed_secs_ago: Option<f64>,
    pub ttl_secs: Option<f64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub stream: StreamStatus,
    pub consumers: Vec<ConsumerStatus>,
    pub leases: Vec<LeaseStatus>,
    pub services: Vec<ServiceStatus>,
    /// Parked messages and unpublishable events, by `huiqi.parked.<service>` subject.
    pub parked: BTreeMap<String, u64>,
    pub parked_error: Option<String>,
}

fn nats(e: impl std::fmt::Display) -> HuiqiError {
    HuiqiError::Nats(e.to_string())
}

/// Gathers the status (the operator's login is enough).
pub async fn status(options: &NatsOptions) -> Result<StatusReport, HuiqiError> {
    use futures_util::StreamExt;
    let client = options.connect("huiqi-status").await.map_err(nats)?;
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js
        .get_stream(huiqi_bus::setup::STREAM)
        .await
        .map_err(nats)?;
    let info = stream.info().await.map_err(nats)?;
    let stream_status = StreamStatus {
        name: huiqi_bus::setup::STREAM.to_string(),
        messages: info.state.messages,
        bytes: info.state.bytes,
        first_sequence: info.state.first_sequence,
        last_sequence: info.state.last_sequence,
        cluster: info
            .cluster
            .as_ref()
            .filter(|c| c.leader.is_some() || !c.replicas.is_empty())
            .map(|c| Replication {
                cluster: c.name.clone(),
                leader: c.leader.clone(),
                replicas: c
                    .replicas
                    .iter()
                    .map(|r| Replica {
                        name: r.name.clone(),
                        peer: unnamed_peer(&r.name).map(str::to_string),
                        current: r.current,
                        offline: r.offline,
                        lag: r.lag.unwrap_or(0),
                        active_secs: r.active.as_secs_f64(),
                    })
                    .collect(),
            }),
    };
    let workers = workers(&stream).await;
    let mut consumers = Vec::new();
    for w in &workers {
        let name = &w.durable;
        consumers.push(match stream.consumer_info(name).await {
            Ok(c) => ConsumerStatus {
                name: name.to_string(),
                filter: Some(c.config.filter_subject.clone()),
                pending: Some(c.num_pending),
                ack_pending: Some(c.num_ack_pending as u64),
                redelivered: Some(c.num_redelivered as u64),
                ack_floor: Some(c.ack_floor.stream_sequence),
                error: None,
            },
            Err(e) => ConsumerStatus {
                name: name.to_string(),
                filter: None,
                pending: None,
                ack_pending: None,
                redelivered: None,
                ack_floor: None,
                error: Some(e.to_string()),
            },
        });
    }
    let leases = lease_status(&js, &workers).await;
    let mut services = Vec::new();
    for w in &workers {
        services.push(service_status(&w.durable, ask_subject(&client, w).await));
    }
    let mut parked = BTreeMap::new();
    let mut parked_error = None;
    match stream
        .info_with_subjects(format!("{}.>", huiqi_events::subjects::PARKED_PREFIX))
        .await
    {
        Ok(mut subjects) => {
            while let Some(item) = subjects.next().await {
                match item {
                    Ok((subject, n)) => {
                        parked.insert(subject, n as u64);
                    }
                    Err(e) => {
                        parked_error = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        Err(e) => parked_error = Some(e.to_string()),
    }
    Ok(StatusReport {
        stream: stream_status,
        consumers,
        leases,
        services,
        parked,
        parked_error,
    })
}

/// One worker of a service: the whole service, or one partition of a split one.
struct Worker {
    service: &'static str,
    /// The partition's index when the service is split.
    partition: Option<u16>,
    /// Its durable consumer's name (`award`, `award-p1`), also its name in the tables.
    durable: String,
}

/// The workers of a deployment, read off the stream's durable consumers: `<service>` for an
/// unsplit service, `<service>-p<i>` for each partition of a split one. When the names cannot
/// be listed, the unsplit ones.
async fn workers(stream: &async_nats::jetstream::stream::Stream) -> Vec<Worker> {
    use futures_util::TryStreamExt;
    let names: Vec<String> = stream
        .consumer_names()
        .try_collect()
        .await
        .unwrap_or_default();
    let mut out = Vec::new();
    for service in crate::commands::SERVICES {
        let mut split: Vec<u16> = names
            .iter()
            .filter_map(|n| n.strip_prefix(&format!("{service}-p"))?.parse().ok())
            .collect();
        split.sort_unstable();
        if split.is_empty() || !huiqi_bus::topology::is_partitioned(service) {
            out.push(Worker {
                service,
                partition: None,
                durable: service.to_string(),
            });
        } else {
            out.extend(split.into_iter().map(|i| Worker {
                service,
                partition: Some(i),
                durable: format!("{service}-p{i}"),
            }));
        }
    }
    out
}

/// A worker's health report: the service's subject, or its partition's.
async fn ask_subject(client: &async_nats::Client, w: &Worker) -> Result<Report, HuiqiError> {
    let subject = match w.partition {
        Some(i) => format!("{}.{i}", huiqi_bus::health::health_subject(w.service)),
        None => huiqi_bus::health::health_subject(w.service),
    };
    ask_on(client, &w.durable, &subject, b"").await
}

fn service_status(name: &str, r: Result<Report, HuiqiError>) -> ServiceStatus {
    match r {
        Ok(report) => ServiceStatus {
            service: name.to_string(),
            report: Some(report),
            error: None,
        },
        Err(e) => ServiceStatus {
            service: name.to_string(),
            report: None,
            error: Some(e.to_string()),
        },
    }
}

/// Each worker's lease: who works, and how recently it renewed.
async fn lease_status(js: &async_nats::jetstream::Context, workers: &[Worker]) -> Vec<LeaseStatus> {
    let blank = |service: &str, error: Option<String>| LeaseStatus {
        service: service.to_string(),
        holder: None,
        state: None,
        renewed_secs_ago: None,
        ttl_secs: None,
        error,
    };
    let kv = match js.get_key_value(huiqi_bus::lease::BUCKET).await {
        Ok(kv) => kv,
        Err(e) => {
            let e = format!("lease bucket: {e} (`huiqi setup` creates it)");
            return workers
                .iter()
                .map(|w| blank(&w.durable, Some(e.clone())))
                .collect();
        }
    };
    let mut out = Vec::new();
    for w in workers {
        let service = w.durable.as_str();
        let key = huiqi_bus::lease::key(w.service, u32::from(w.partition.unwrap_or(0)));
        out.push(match huiqi_bus::lease::read(&kv, &key).await {
            Ok(Some(e)) => {
                let v: Option<huiqi_bus::lease::LeaseValue> = serde_json::from_slice(&e.value).ok();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as i128)
                    .unwrap_or(0);
                let ago = (now - e.created.unix_timestamp_nanos()) as f64 / 1e9;
                LeaseStatus {
                    service: service.to_string(),
                    holder: v.as_ref().map(|v| v.holder.clone()),
                    state: v.as_ref().map(|v| v.state.clone()),
                    renewed_secs_ago: Some(ago.max(0.0)),
                    ttl_secs: v.map(|v| v.ttl_ms as f64 / 1000.0),
                    error: None,
                }
            }
            Ok(None) => blank(service, None),
            Err(e) => blank(service, Some(e.to_string())),
        });
    }
    out
}

/// Asks every service for its report (`huiqi.health.<service>`), 2 s each.
pub async fn health_reports(client: &async_nats::Client) -> Vec<ServiceStatus> {
    let mut out = Vec::new();
    for name in crate::commands::SERVICES {
        out.push(service_status(name, health(client, name).await));
    }
    out
}

/// One service's report.
pub async fn health(client: &async_nats::Client, service: &str) -> Result<Report, HuiqiError> {
    ask(client, service, b"").await
}

/// How long a live audit may take before the caller gives up.
const LIVE_AUDIT_LIMIT: Duration = Duration::from_secs(600);

/// One service's report with a live audit of its log (the service recomputes its hash chain
/// while it runs). The service answers every request at once — it may answer only within
/// `SERVICE_ANSWER_WINDOW` — so the audit is started by one request and its result asked for
/// every half second after, for at most [`LIVE_AUDIT_LIMIT`].
pub async fn live_audit(client: &async_nats::Client, service: &str) -> Result<Report, HuiqiError> {
    let started = ask(client, service, br#"{"audit": true}"#).await?;
    let run = started.audit_run.ok_or_else(|| {
        HuiqiError::Input(format!(
            "{service} did not start a live audit (is it an older version?)"
        ))
    })?;
    let deadline = tokio::time::Instant::now() + LIVE_AUDIT_LIMIT;
    let body = format!("{{\"audit_run\": {run}}}");
    let mut unanswered = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if tokio::time::Instant::now() > deadline {
            return Err(HuiqiError::Nats(format!(
                "{service}'s live audit (run {run}) did not finish within {} s",
                LIVE_AUDIT_LIMIT.as_secs()
            )));
        }
        let r = match ask(client, service, body.as_bytes()).await {
            Ok(r) => r,
            // A busy service may miss one answer; three in a row is an outage.
            Err(e) if unanswered < 2 => {
                unanswered += 1;
                tracing::debug!(service, error = %e, "live audit poll unanswered");
                continue;
            }
            Err(e) => return Err(e),
        };
        unanswered = 0;
        match (r.audit_run, &r.audit) {
            (Some(_), Some(_)) => return Ok(r),
            (Some(_), None) => continue,
            (None, _) => {
                return Err(HuiqiError::Nats(format!(
                    "{service} no longer knows its live audit run {run} (it restarted?); run the audit again"
                )))
            }
        }
    }
}

async fn ask(
    client: &async_nats::Client,
    service: &str,
    body: &[u8],
) -> Result<Report, HuiqiError> {
    ask_on(
        client,
        service,
        &huiqi_bus::health::health_subject(service),
        body,
    )
    .await
}

async fn ask_on(
    client: &async_nats::Client,
    service: &str,
    subject: &str,
    body: &[u8],
) -> Result<Report, HuiqiError> {
    let req = async_nats::Request::new()
        .payload(bytes::Bytes::copy_from_slice(body))
        .timeout(Some(Duration::from_secs(2)));
    let reply = client
        .send_request(subject.to_string(), req)
        .await
        .map_err(|e| HuiqiError::Nats(format!("{service} does not answer: {e}")))?;
    serde_json::from_slice(&reply.payload)
        .map_err(|e| HuiqiError::Input(format!("{service} answered something else: {e}")))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY).set_header(header.to_vec());
    t
}

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// The services' reports as a table, with a line per provider that is failing or answered.
pub fn render_services(services: &[ServiceStatus]) -> String {
    let mut t = table(&[
        "service",
        "status",
        "received",
        "parked",
        "relay backlog",
        "waiting for",
    ]);
    for s in services {
        match &s.report {
            None => {
                t.add_row(vec![
                    s.service.clone(),
                    "NOT ANSWERING".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    s.error.clone().unwrap_or_default(),
                ]);
            }
            Some(r) => {
                let mut notes = Vec::new();
                if let Some(t) = r.relay_failing_since {
                    notes.push(format!(
                        "RELAY FAILING for {} s",
                        now_secs().saturating_sub(t)
                    ));
                }
                for p in &r.providers {
                    let failing = p["failing_for_attempts"].as_u64().unwrap_or(0);
                    let subject = p["subject"].as_str().unwrap_or("");
                    if failing > 0 {
                        notes.push(format!(
                            "{subject} FAILING for {} s ({failing} attempts; last error: {})",
                            now_secs().saturating_sub(p["failing_since"].as_u64().unwrap_or(0)),
                            p["last_error"].as_str().unwrap_or("")
                        ));
                    } else {
                        notes.push(format!(
                            "{subject} ok ({} requests, {} failed)",
                            p["requests"], p["failures"]
                        ));
                    }
                }
                t.add_row(vec![
                    s.service.clone(),
                    r.status.clone(),
                    r.received.to_string(),
                    r.parked.to_string(),
                    r.relay_backlog.to_string(),
                    notes.join("\n"),
                ]);
            }
        }
    }
    format!("{t}\n")
}

/// The peer id in NATS's placeholder for a replica whose server name the leader has not
/// learned (`Server name unknown at this time (peerID: isnMgF9k)`), None for a real name.
fn unnamed_peer(name: &str) -> Option<&str> {
    name.strip_prefix("Server name unknown")?
        .split_once("peerID: ")?
        .1
        .strip_suffix(')')
}

impl StatusReport {
    /// The tables an operator reads.
    pub fn render(&self) -> String {
        let s = &self.stream;
        let mut out = format!(
            "stream {}: {} messages, {} bytes, sequences {}..{}\n",
            s.name, s.messages, s.bytes, s.first_sequence, s.last_sequence
        );
        if let Some(c) = &s.cluster {
            let replicas: Vec<String> = c
                .replicas
                .iter()
                .map(|r| {
                    let state = if r.offline {
                        "OFFLINE".to_string()
                    } else if r.current {
                        "current".to_string()
                    } else {
                        format!(
                            "BEHIND by {} (last heard {:.1} s ago)",
                            r.lag, r.active_secs
                        )
                    };
                    match &r.peer {
                        Some(peer) => format!("node unknown to the leader (peer {peer}) {state}"),
                        None => format!("{} {state}", r.name),
                    }
                })
                .collect();
            out.push_str(&format!(
                "  replicated on cluster {}: leader {}; replicas: {}\n",
                c.cluster.as_deref().unwrap_or("?"),
                c.leader.as_deref().unwrap_or("NONE (electing)"),
                if replicas.is_empty() {
                    "none".to_string()
                } else {
                    replicas.join(", ")
                }
            ));
        }
        let mut t = table(&[
            "consumer",
            "filter",
            "pending",
            "ack pending",
            "redelivered",
            "acked to seq",
        ]);
        for c in &self.consumers {
            match &c.error {
                Some(e) => t.add_row(vec![c.name.clone(), format!("not found ({e})")]),
                None => t.add_row(vec![
                    c.name.clone(),
                    c.filter.clone().unwrap_or_default(),
                    opt(c.pending),
                    opt(c.ack_pending),
                    opt(c.redelivered),
                    opt(c.ack_floor),
                ]),
            };
        }
        out.push_str(&format!("{t}\n"));
        let leases: Vec<String> = self
            .leases
            .iter()
            .map(|l| match (&l.error, &l.holder, l.state.as_deref()) {
                (Some(e), _, _) => format!("{} UNKNOWN ({e})", l.service),
                (None, Some(h), Some("held")) => {
                    let late =
                        matches!((l.renewed_secs_ago, l.ttl_secs), (Some(a), Some(t)) if a > t);
                    format!(
                        "{} held by {h} (renewed {:.1} s ago{})",
                        l.service,
                        l.renewed_secs_ago.unwrap_or(0.0),
                        if late {
                            ": LAPSED, a standby may take it"
                        } else {
                            ""
                        }
                    )
                }
                (None, Some(h), _) => format!("{} released by {h}: NOBODY WORKS", l.service),
                (None, None, _) => format!("{} never taken: NOBODY WORKS", l.service),
            })
            .collect();
        out.push_str(&format!("leases: {}\n", leases.join("; ")));
        out.push_str(&render_services(&self.services));
        if let Some(e) = &self.parked_error {
            out.push_str(&format!("parked counts unavailable: {e}\n"));
        }
        let total: u64 = self.parked.values().sum();
        if total == 0 {
            out.push_str("parked: none\n");
        } else {
            out.push_str(&format!(
                "PARKED: {total} message(s) need an operator (`huiqi parked` lists them, with the reason):\n"
            ));
            for (subject, n) in &self.parked {
                out.push_str(&format!("  {subject:<28} {n}\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::unnamed_peer;

    #[test]
    fn a_replica_the_leader_cannot_name_is_known_by_its_peer_id() {
        assert_eq!(
            unnamed_peer("Server name unknown at this time (peerID: isnMgF9k)"),
            Some("isnMgF9k")
        );
        assert_eq!(unnamed_peer("huiqi-1"), None);
        assert_eq!(unnamed_peer("peerID: x)"), None);
    }
}
