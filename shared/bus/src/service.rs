//! What every service starts with and how it stops: connect with its own credentials, bind its
//! durable consumer, open its sled log, fold it loudly, start the group writer and the signing
//! outbox relay; on shutdown let the consumer and workers reach a safe state first, then let
//! the relay publish what they appended.

use crate::connect::NatsOptions;
use crate::consumer::{self, BatchHandler, ConsumerSpec, Delivery, Gate, Signatures};
use crate::lease::{Fence, Lease};
use crate::relay::Relay;
use crate::restore::RestoreRules;
use crate::trust::{SigningKey, TrustStore};
use crate::writer::LogWriter;
use crate::BusError;
use async_nats::jetstream;
use huiqi_eventlog::{EventLog, LogError, Pending, Record};
use huiqi_events::payloads::{MessageParked, RecordSkipped};
use huiqi_events::{subjects, types, Envelope, Partition};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What every service needs to run, whoever starts it (its binary, `huiqi up`, a test).
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub nats: NatsOptions,
    /// This service's own sled directory.
    pub data_dir: PathBuf,
    /// The key the service signs what it publishes with.
    pub signing_key: Arc<SigningKey>,
    /// The keys whose events it accepts, and for which types.
    pub trust: Arc<TrustStore>,
    /// Log records the operator told it to skip at start when they cannot be read.
    pub skip_records: Vec<u64>,
    /// Operator-loaded policy versions (`--policy-dir`), besides the built-in ones.
    pub policy_dir: Option<PathBuf>,
    /// How often the log head is anchored on the stream while it moves (and once at stop).
    pub anchor_every: std::time::Duration,
    /// Which instance does the work when several run (crate::lease).
    pub lease: LeaseSettings,
    /// The partition this worker holds (huiqi_events::partition): its consumer, lease, log
    /// directory and internal subjects. Intake is never split; it reads the count only, to
    /// route each claim to its partition. [`Partition::ONLY`] unless split.
    pub partition: Partition,
}

/// How a service instance takes and holds its lease (several instances, one working).
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// Off only for tools and tests that run one piece alone; services always hold one.
    pub enabled: bool,
    /// This instance's id; by default the host and the canonical data directory.
    pub instance: Option<String>,
    /// How long a holder's lapse lasts before a standby takes over.
    pub ttl: std::time::Duration,
    /// A login that may read the whole stream and rewind this service's consumer (the NATS
    /// user `recovery`): needed only to take over from another instance, whose log this
    /// instance does not have, by rebuilding it from the stream.
    pub recovery: Option<NatsOptions>,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        LeaseSettings {
            enabled: true,
            instance: None,
            ttl: std::time::Duration::from_secs(10),
            recovery: None,
        }
    }
}

impl ServiceConfig {
    pub fn new(
        nats: NatsOptions,
        data_dir: PathBuf,
        signing_key: Arc<SigningKey>,
        trust: Arc<TrustStore>,
    ) -> Self {
        ServiceConfig {
            nats,
            data_dir,
            signing_key,
            trust,
            skip_records: Vec::new(),
            policy_dir: None,
            anchor_every: std::time::Duration::from_secs(60),
            lease: LeaseSettings::default(),
            partition: Partition::ONLY,
        }
    }

    /// The configuration of `service`'s worker for `partition`: for a split service its own
    /// log directory (`<data_dir>/p<index>`); intake keeps its one directory.
    pub fn for_partition(&self, service: &str, partition: Partition) -> ServiceConfig {
        let mut c = self.clone();
        c.partition = partition;
        if crate::topology::is_partitioned(service) {
            c.data_dir = partition.dir(&self.data_dir);
        }
        c
    }
}

/// Runs one worker of a service per configuration (the partitions this process holds) until
/// `shutdown`: `build` starts one — each waits for its own partition's lease, all at once, so
/// a standby process takes over each partition as its holder lapses — and `run` runs it on its
/// own task as soon as it is built, so partitions decide on several cores. The first to fail
/// stops the others, and its error is returned once they have stopped in a safe state.
pub async fn run_workers<A, B, BF, R, RF, E>(
    configs: Vec<ServiceConfig>,
    shutdown: CancellationToken,
    build: B,
    run: R,
) -> Result<(), E>
where
    B: Fn(ServiceConfig) -> BF,
    BF: Future<Output = Result<A, E>>,
    R: Fn(A, CancellationToken) -> RF,
    RF: Future<Output = Result<(), E>> + Send + 'static,
    E: Send + 'static,
{
    use futures_util::StreamExt;
    let stop = shutdown.child_token();
    let mut builds: futures_util::stream::FuturesUnordered<BF> =
        configs.into_iter().map(build).collect();
    let mut running = tokio::task::JoinSet::new();
    let mut first = Ok(());
    let fail = |e: E, first: &mut Result<(), E>| {
        stop.cancel();
        if first.is_ok() {
            *first = Err(e);
        }
    };
    loop {
        tokio::select! {
            Some(built) = builds.next(), if !builds.is_empty() => match built {
                Ok(app) if !stop.is_cancelled() => {
                    let (fut, stop) = (run(app, stop.clone()), stop.clone());
                    running.spawn(async move {
                        let r = fut.await;
                        if r.is_err() {
                            stop.cancel();
                        }
                        r
                    });
                }
                // Built after the stop: dropped unstarted (its log closes, its lease lapses).
                Ok(_) => {}
                Err(e) => fail(e, &mut first),
            },
            Some(r) = running.join_next(), if !running.is_empty() => match r {
                Ok(Err(e)) => fail(e, &mut first),
                Ok(Ok(())) => {}
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            },
            // Stopped with workers still waiting for their lease: they end with the process.
            _ = stop.cancelled(), if running.is_empty() && !builds.is_empty() => break,
            else => break,
        }
    }
    first
}

pub struct Core {
    pub name: String,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub writer: LogWriter,
    relay: Relay,
    trust: Arc<TrustStore>,
    skip_records: Vec<u64>,
    key: Arc<SigningKey>,
    anchor_every: std::time::Duration,
    lease: Option<Lease>,
    fence: Fence,
    partition: Partition,
}

impl Core {
    /// Connects, takes the service's lease (standing by while another instance holds it;
    /// rebuilding the log from the stream when taking over from another instance), opens the
    /// log in the config's directory (created if missing) and starts the writer and the relay.
    pub async fn start(
        name: &str,
        config: &ServiceConfig,
        rules: &dyn RestoreRules,
    ) -> Result<Core, BusError> {
        let dir = &config.data_dir;
        let partition = if crate::topology::is_partitioned(name) {
            config.partition
        } else {
            Partition::ONLY
        };
        std::fs::create_dir_all(dir).map_err(|e| BusError::Setup {
            what: format!("data dir {}", dir.display()),
            message: e.to_string(),
        })?;
        let client = config.nats.connect(&format!("huiqi-{name}")).await?;
        let js = jetstream::new(client.clone());
        let lease = if config.lease.enabled {
            Some(hold_lease(name, partition, config, rules, &js).await?)
        } else {
            None
        };
        let fence = lease
            .as_ref()
            .map(Lease::fence)
            .unwrap_or_else(Fence::always);
        let log = Arc::new(EventLog::open(dir)?);
        let relay = Relay::new(name, log.clone(), js.clone(), config.signing_key.clone())
            .fenced(fence.clone())
            .in_partition(partition);
        let writer = LogWriter::spawn(log, relay.waker());
        Ok(Core {
            name: name.to_string(),
            client,
            js,
            writer,
            relay,
            trust: config.trust.clone(),
            skip_records: config.skip_records.clone(),
            key: config.signing_key.clone(),
            anchor_every: config.anchor_every,
            lease,
            fence,
            partition,
        })
    }

    /// The partition this worker holds ([`Partition::ONLY`] for intake and unsplit services).
    pub fn partition(&self) -> Partition {
        self.partition
    }

    /// This worker's durable consumer: the service's, or its partition's (`<service>-p<i>`).
    pub fn consumer_spec(&self) -> ConsumerSpec {
        crate::topology::service_consumer_in(&self.name, self.partition)
            .expect("every service that consumes has a consumer")
    }

    /// Whether this instance holds its service's lease now (workers that act outside the
    /// consumer, like payout's treasury calls, check it before acting).
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// A token cancelled on `shutdown` or when another instance takes this one's lease: what
    /// a service's workers stop on.
    pub fn guard(&self, shutdown: &CancellationToken) -> CancellationToken {
        let token = shutdown.child_token();
        if self.lease.is_some() {
            let (t, fence) = (token.clone(), self.fence.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = fence.wait_lost() => t.cancel(),
                    _ = t.cancelled() => {}
                }
            });
        }
        token
    }

    pub fn log(&self) -> &Arc<EventLog> {
        self.writer.log()
    }

    /// Folds the log into the service's state with `apply`, loudly: a record that cannot be
    /// read (or that `apply` cannot decode) stops the start with the service, sequence and
    /// reason, unless the operator named it in `--skip-record` (or skipped it before), in which
    /// case the skip is recorded in the log as an event and the record left out.
    pub fn fold(
        &self,
        mut apply: impl FnMut(&Record) -> Result<(), String>,
    ) -> Result<(), BusError> {
        fold_log(self.log(), &self.name, &self.skip_records, &mut apply)
    }

    /// Runs the consumer loop and `work` until `shutdown`; then stops the relay after one final
    /// drain, so every event appended before the stop is published.
    pub async fn run<H, W>(
        self,
        consumer: jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
        spec: ConsumerSpec,
        handler: H,
        signatures: Signatures,
        work: W,
        shutdown: CancellationToken,
    ) -> Result<(), BusError>
    where
        H: BatchHandler + 'static,
        W: Future<Output = Result<(), BusError>> + Send + 'static,
    {
        let shutdown = self.guard(&shutdown);
        let relay_stop = CancellationToken::new();
        let relay = tokio::spawn(self.relay.run(relay_stop.clone()));
        let anchors = tokio::spawn(crate::anchor::run(
            crate::anchor::Anchoring {
                js: self.js.clone(),
                service: self.name.clone(),
                partition: self.partition,
                key: self.key.clone(),
                every: self.anchor_every,
            },
            self.writer.log().clone(),
            relay_stop.clone(),
            self.fence.clone(),
        ));
        let health = tokio::spawn(crate::health::serve(
            self.client.clone(),
            self.name.clone(),
            self.partition,
            self.writer.log().clone(),
            relay_stop.clone(),
        ));
        let gate = Gate {
            service: self.name.clone(),
            trust: self.trust.clone(),
            signatures,
            writer: self.writer.clone(),
            fence: self.fence.clone(),
        };
        let consume = consumer::run(consumer, spec, handler, gate, shutdown.clone());
        let (c, w) = tokio::join!(consume, work);
        relay_stop.cancel();
        let _ = health.await;
        let _ = anchors.await;
        let r = relay
            .await
            .map_err(|e| BusError::Handler(format!("relay task: {e}")))?;
        // Close the log before returning: a restart in the same process must find it unlocked.
        self.writer.close().await;
        if let Some(by) = self.fence.lost_to() {
            return Err(BusError::LeaseLost {
                service: self.name.clone(),
                by,
            });
        }
        // Published what it logged: now a standby may take over at once.
        if let Some(lease) = self.lease {
            lease.release().await;
        }
        c?;
        w?;
        r
    }
}

/// Takes the service's lease (standing by while another instance holds it) and makes sure
/// the log in the directory is the current one, rebuilding it from the stream when not.
async fn hold_lease(
    name: &str,
    partition: Partition,
    config: &ServiceConfig,
    rules: &dyn RestoreRules,
    js: &jetstream::Context,
) -> Result<Lease, BusError> {
    let dir = &config.data_dir;
    let kv = crate::lease::open_bucket(js, std::time::Duration::from_secs(120)).await?;
    let instance = config
        .lease
        .instance
        .clone()
        .unwrap_or_else(|| crate::lease::default_instance(dir));
    let (lease, acquired) = Lease::acquire(
        kv,
        &crate::lease::key(name, u32::from(partition.index())),
        &instance,
        config.lease.ttl,
        &CancellationToken::new(),
    )
    .await?;
    let marker = dir.join(RUN_MARKER);
    if let Some(previous) = &acquired.previous {
        // This directory's log is the current one only if the run that held the lease last
        // ran on it (a restart). Otherwise another instance — or another process under the
        // same id — decided since, or the directory was lost: rebuild.
        let has_log = std::fs::read_dir(dir)
            .map(|d| d.flatten().any(|e| e.file_name() != RUN_MARKER))
            .unwrap_or(false);
        let current = has_log
            && match std::fs::read_to_string(&marker) {
                Ok(run) => run == acquired.previous_incarnation,
                // Written by `huiqi restore` or before leases: this instance's own if it held
                // the lease last.
                Err(_) => *previous == instance,
            };
        if !current {
            take_over(name, partition, config, rules, previous).await?;
        }
    }
    std::fs::write(&marker, &acquired.incarnation).map_err(|e| BusError::Setup {
        what: format!("{}", marker.display()),
        message: e.to_string(),
    })?;
    Ok(lease)
}

/// The file in a service's directory naming the run (lease incarnation) that last worked on
/// this log: a restart compares it with the lease to know whether its log is current.
const RUN_MARKER: &str = "lease-run";

/// Takes over from `previous`, another instance: its log is not this one's, and an old copy
/// in this directory lacks what `previous` decided, so the directory is moved aside and the
/// log rebuilt from the stream (the restore of `huiqi restore`, with the `recovery` login),
/// the consumer rewound to the first input without an answer.
async fn take_over(
    name: &str,
    partition: Partition,
    config: &ServiceConfig,
    rules: &dyn RestoreRules,
    previous: &str,
) -> Result<(), BusError> {
    let dir = &config.data_dir;
    let setup = |what: String, e: &dyn std::fmt::Display| BusError::Setup {
        what,
        message: e.to_string(),
    };
    let recovery = config.lease.recovery.as_ref().ok_or_else(|| {
        setup(
            format!("rebuilding {name}'s log (the lease was last held by {previous})"),
            &"this instance must rebuild the log from the stream and has no recovery login (--recovery-nkey or HUIQI_RECOVERY_NKEY_FILE: the seed of the NATS user `recovery`)",
        )
    })?;
    let occupied = std::fs::read_dir(dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if occupied {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let aside = dir.with_file_name(format!(
            "{}.replaced-{stamp}",
            dir.file_name().and_then(|n| n.to_str()).unwrap_or(name)
        ));
        std::fs::rename(dir, &aside)
            .map_err(|e| setup(format!("moving {} aside", dir.display()), &e))?;
        tracing::warn!(service = name, old = %aside.display(), "an older log of this instance moved aside: it lacks what the previous holder decided");
        std::fs::create_dir_all(dir)
            .map_err(|e| setup(format!("data dir {}", dir.display()), &e))?;
    }
    let started = std::time::Instant::now();
    let client = recovery.connect(&format!("huiqi-{name}-recovery")).await?;
    let js = jetstream::new(client);
    // A cluster may lose quorum or a node while this runs: a failed try starts again from an
    // empty directory (the lease is renewed meanwhile), for up to three minutes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let report = loop {
        let attempt = async {
            let log = EventLog::open(dir)?;
            let report = crate::restore::restore(
                &js,
                name,
                partition,
                &log,
                &config.trust,
                rules,
                &mut |read, total| {
                    tracing::info!(
                        service = name,
                        read,
                        total,
                        "rebuilding the log from the stream"
                    );
                },
            )
            .await?;
            drop(log);
            if let Some(from) = report.first_unanswered {
                crate::restore::rewind_consumer(&js, name, partition, from).await?;
            }
            Ok::<_, BusError>(report)
        };
        match attempt.await {
            Ok(report) => break report,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::warn!(service = name, error = %e, "rebuilding the log failed; starting it again");
                std::fs::remove_dir_all(dir)
                    .and_then(|_| std::fs::create_dir_all(dir))
                    .map_err(|e| setup(format!("emptying {}", dir.display()), &e))?;
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e),
        }
    };
    tracing::info!(
        service = name,
        previous,
        records = report.log_records,
        stream_messages = report.stream_messages,
        unanswered = report.unanswered_left_for_redelivery,
        refused_signatures = report.refused_signatures,
        secs = started.elapsed().as_secs_f64(),
        "took over: log rebuilt from the stream"
    );
    Ok(())
}

/// The loud fold of [`Core::fold`], for tools that open a log without a service (replay).
pub fn fold_log(
    log: &EventLog,
    service: &str,
    skip_requested: &[u64],
    apply: &mut dyn FnMut(&Record) -> Result<(), String>,
) -> Result<(), BusError> {
    let mut skipped = log.skipped()?;
    let mut handle_bad = |seq: u64, reason: String| -> Result<(), BusError> {
        if skipped.contains_key(&seq) {
            return Ok(());
        }
        if skip_requested.contains(&seq) {
            let reason = huiqi_events::mask_digit_runs(&reason);
            tracing::warn!(service, seq, reason = %reason, "log record skipped on the operator's request");
            let data = RecordSkipped {
                service: service.to_string(),
                log_sequence: seq,
                reason: reason.clone(),
            };
            let env = Envelope::derived(
                service,
                types::RECORD_SKIPPED,
                &format!("log-{seq}"),
                &data,
                &format!("log-{seq}"),
                "0",
            )
            .expect("serializes");
            log.skip(seq, &reason, Pending::local(env))?;
            skipped.insert(seq, reason);
            return Ok(());
        }
        Err(BusError::Fold {
            service: service.to_string(),
            seq,
            reason: huiqi_events::mask_digit_runs(&reason),
        })
    };
    let head = log.head()?.0;
    for rec in log.records_from(1) {
        match rec {
            Ok(r) if r.seq > head => break,
            Ok(r) => {
                if let Err(reason) = apply(&r) {
                    handle_bad(r.seq, reason)?;
                }
            }
            Err(LogError::Corrupt { seq, reason }) => handle_bad(seq, reason)?,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Decodes a logged event's data for a fold, naming the type in the error.
pub fn data<T: serde::de::DeserializeOwned>(env: &Envelope) -> Result<T, String> {
    env.data_as::<T>().map_err(|e| e.to_string())
}

/// The event that records a poison message in a service's log and publishes it on
/// `huiqi.parked.<service>` for operators (the original bytes and signature included, so it can
/// be republished once its cause is fixed). Its id derives from the stream message.
pub fn parked(service: &str, d: &Delivery, reason: &str) -> Pending {
    crate::health::counters(service)
        .parked
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    metrics::counter!("huiqi_messages_parked_total", "service" => service.to_string()).increment(1);
    let data = MessageParked {
        service: service.to_string(),
        subject: d.subject.clone(),
        stream_sequence: d.stream_sequence,
        delivered: d.delivered.max(0) as u64,
        reason: reason.to_string(),
        payload: String::from_utf8_lossy(&d.payload).into_owned(),
        signature: d.signature.clone(),
    };
    let key = d.stream_key();
    let env = Envelope::derived(service, types::MESSAGE_PARKED, &key, &data, &key, "0")
        .expect("parked record serializes");
    Pending::publish(env, subjects::parked_subject(service))
}

/// Runs `work` for every job from `resume` (work left over before a restart) and then from
/// `rx`, at most `limit` at a time, until `shutdown`; then waits for the jobs in hand, which end
/// early on shutdown and leave their progress in the log. An `Err` from a job (the log failing)
/// stops the queue with that error.
pub async fn work_queue<J, F, Fut>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<J>,
    resume: Vec<J>,
    limit: usize,
    shutdown: CancellationToken,
    work: F,
) -> Result<(), BusError>
where
    J: Send + 'static,
    F: Fn(J, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), BusError>> + Send + 'static,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(limit.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut queue: std::collections::VecDeque<J> = resume.into();
    let joined = |r: Result<Result<(), BusError>, tokio::task::JoinError>| {
        r.map_err(|e| BusError::Handler(format!("job task: {e}")))?
    };
    loop {
        while let Some(r) = tasks.try_join_next() {
            joined(r)?;
        }
        let job = match queue.pop_front() {
            Some(j) => j,
            None => tokio::select! {
                _ = shutdown.cancelled() => break,
                j = rx.recv() => match j { Some(j) => j, None => break },
                Some(r) = tasks.join_next(), if !tasks.is_empty() => { joined(r)?; continue; }
            },
        };
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
        };
        let fut = work(job, shutdown.clone());
        tasks.spawn(async move {
            let r = fut.await;
            drop(permit);
            r
        });
    }
    while let Some(r) = tasks.join_next().await {
        joined(r)?;
    }
    Ok(())
}

/// The consumer half of a service whose real work is slow (provider calls, payments): it
/// records each incoming event in the log with its exact bytes (and its inbox mark), ignores a
/// second event for a key it already has (e.g. the same claim under another event id), parks
/// what it cannot read, and — only once the batch is durable — hands each new job to the
/// worker queue. Deliveries reach it only after their signature was accepted.
pub struct RecordAndQueue<T, J> {
    pub service: &'static str,
    /// The one event type this consumer acts on.
    pub ty: &'static str,
    pub writer: crate::LogWriter,
    /// Keys already recorded (folded from the log at start).
    pub known: std::collections::HashSet<String>,
    pub key: fn(&T) -> String,
    /// A last check of the content before it is recorded as work (e.g. a payment order's
    /// amount); what fails is parked with the reason.
    pub check: fn(&T) -> Result<(), String>,
    pub job: fn(Envelope, T) -> J,
    pub tx: tokio::sync::mpsc::UnboundedSender<J>,
}

impl<T, J> BatchHandler for RecordAndQueue<T, J>
where
    T: serde::de::DeserializeOwned + Send,
    J: Send + 'static,
{
    async fn handle(&mut self, batch: Vec<Delivery>) -> Result<crate::consumer::Handled, BusError> {
        use crate::Disposition;
        use huiqi_eventlog::Commit;
        let mut commits = Vec::with_capacity(batch.len());
        let mut dispositions = Vec::with_capacity(batch.len());
        let mut jobs = Vec::new();
        for d in batch {
            let ty = self.ty;
            let parsed = Envelope::decode(&d.payload)
                .and_then(huiqi_events::types::upcast)
                .map_err(|e| e.to_string())
                .and_then(|env| {
                    if env.ty != ty {
                        return Err(format!("expected `{ty}`, got `{}`", env.ty));
                    }
                    let t = env.data_as::<T>().map_err(|e| e.to_string())?;
                    (self.check)(&t)?;
                    Ok((env, t))
                });
            match parsed {
                Ok((env, item)) => {
                    let key = (self.key)(&item);
                    if self.known.insert(key.clone()) {
                        commits.push(Commit {
                            inbox_id: Some(env.id.clone()),
                            events: vec![Pending::received(env.clone(), d.payload.clone())],
                        });
                        jobs.push((self.job)(env, item));
                    } else {
                        tracing::warn!(service = self.service, key = %huiqi_events::escape_control(&key), "a second event for the same work ignored");
                        commits.push(Commit {
                            inbox_id: Some(env.id.clone()),
                            events: vec![],
                        });
                    }
                    dispositions.push(Disposition::Ack);
                }
                Err(reason) => {
                    let reason = huiqi_events::mask_digit_runs(&reason);
                    tracing::error!(
                        service = self.service,
                        stream_seq = d.stream_sequence,
                        reason = %reason,
                        "unreadable event parked"
                    );
                    commits.push(Commit {
                        inbox_id: Some(d.stream_key()),
                        events: vec![parked(self.service, &d, &reason)],
                    });
                    dispositions.push(Disposition::Term);
                }
            }
        }
        // Durable first; only then may the worker start (and the messages be acked).
        let tx = self.tx.clone();
        Ok(crate::consumer::Handled {
            commits,
            dispositions,
            after: Some(Box::new(move || {
                for job in jobs {
                    let _ = tx.send(job);
                }
            })),
        })
    }
}

/// A token cancelled on Ctrl-C or SIGTERM (systemd's and Docker's stop), so the process stops
/// in a safe state.
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let term = async {
            #[cfg(unix)]
            if let Ok(mut s) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                s.recv().await;
                return;
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        tracing::info!("stop signal received; finishing the work in hand");
        t.cancel();
    });
    token
}

/// A service's consuming half, ready to run: its core, its durable consumer and the handler.
pub struct Consuming<H> {
    core: Core,
    spec: ConsumerSpec,
    consumer: jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
    handler: H,
    signatures: Signatures,
}

impl<H: BatchHandler + 'static> Consuming<H> {
    /// Binds the durable consumer `spec` (provisioned by an admin) and pairs it with `handler`.
    pub async fn new(
        core: Core,
        spec: ConsumerSpec,
        handler: H,
        signatures: Signatures,
    ) -> Result<Self, BusError> {
        let consumer = crate::setup::bind_consumer(&core.js, &spec).await?;
        Ok(Consuming {
            core,
            spec,
            consumer,
            handler,
            signatures,
        })
    }

    pub fn log(&self) -> Arc<EventLog> {
        self.core.log().clone()
    }

    /// `shutdown`, also cancelled when another instance takes the lease ([`Core::guard`]).
    pub fn guard(&self, shutdown: &CancellationToken) -> CancellationToken {
        self.core.guard(shutdown)
    }

    /// Runs the consumer and `work` (a service's worker, or nothing) until `shutdown`.
    pub async fn run<W>(self, work: W, shutdown: CancellationToken) -> Result<(), BusError>
    where
        W: Future<Output = Result<(), BusError>> + Send + 'static,
    {
        self.core
            .run(
                self.consumer,
                self.spec,
                self.handler,
                self.signatures,
                work,
                shutdown,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn configs(n: u16) -> Vec<ServiceConfig> {
        let keys = crate::trust::KeySet::generate();
        let base = ServiceConfig::new(
            crate::NatsOptions::new("nats://127.0.0.1:1"),
            PathBuf::from("/nonexistent/award"),
            keys.key("award").unwrap(),
            Arc::new(keys.trust_store()),
        );
        Partition::all(n)
            .map(|p| base.for_partition("award", p))
            .collect()
    }

    #[tokio::test]
    async fn a_partition_runs_while_another_still_waits_for_its_lease_and_a_failure_stops_all() {
        let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
        let started = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stopped = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s1, s2) = (started.clone(), stopped.clone());
        let runner = tokio::spawn(run_workers(
            configs(2),
            CancellationToken::new(),
            move |c| {
                let mut gate = gate_rx.clone();
                async move {
                    // Partition 0's lease is held elsewhere: its build waits for the gate.
                    if c.partition.index() == 0 {
                        let _ = gate.wait_for(|open| *open).await;
                    }
                    Ok::<u16, String>(c.partition.index())
                }
            },
            move |p, stop| {
                let (started, stopped) = (s1.clone(), s2.clone());
                async move {
                    started.lock().unwrap().push(p);
                    if p == 0 {
                        return Err("partition 0 failed".to_string());
                    }
                    stop.cancelled().await;
                    stopped.lock().unwrap().push(p);
                    Ok(())
                }
            },
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(*started.lock().unwrap(), [1], "partition 1 works meanwhile");
        gate_tx.send(true).unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), runner)
            .await
            .expect("the failure stops every worker")
            .unwrap();
        assert_eq!(r, Err("partition 0 failed".to_string()));
        assert_eq!(
            *stopped.lock().unwrap(),
            [1],
            "partition 1 stopped in order"
        );
    }
}
