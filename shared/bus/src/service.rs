//! What every service starts with and how it stops: connect with its own credentials, bind its
//! durable consumer, open its sled log, fold it loudly, start the group writer and the signing
//! outbox relay; on shutdown let the consumer and workers reach a safe state first, then let
//! the relay publish what they appended.

use crate::connect::NatsOptions;
use crate::consumer::{self, BatchHandler, ConsumerSpec, Delivery, Gate, Signatures};
use crate::relay::Relay;
use crate::trust::{SigningKey, TrustStore};
use crate::writer::LogWriter;
use crate::BusError;
use async_nats::jetstream;
use huiqi_eventlog::{EventLog, LogError, Pending, Record};
use huiqi_events::payloads::{MessageParked, RecordSkipped};
use huiqi_events::{subjects, types, Envelope};
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
        }
    }
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
}

impl Core {
    /// Opens the log in the config's directory (created if missing), connects and starts the
    /// writer and the relay.
    pub async fn start(name: &str, config: &ServiceConfig) -> Result<Core, BusError> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| BusError::Setup {
            what: format!("data dir {}", dir.display()),
            message: e.to_string(),
        })?;
        let log = Arc::new(EventLog::open(dir)?);
        let client = config.nats.connect(&format!("huiqi-{name}")).await?;
        let js = jetstream::new(client.clone());
        let relay = Relay::new(name, log.clone(), js.clone(), config.signing_key.clone());
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
        })
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
        let relay_stop = CancellationToken::new();
        let relay = tokio::spawn(self.relay.run(relay_stop.clone()));
        let anchors = tokio::spawn(crate::anchor::run(
            self.js.clone(),
            self.name.clone(),
            self.writer.log().clone(),
            self.key.clone(),
            self.anchor_every,
            relay_stop.clone(),
        ));
        let health = tokio::spawn(crate::health::serve(
            self.client.clone(),
            self.name.clone(),
            self.writer.log().clone(),
            relay_stop.clone(),
        ));
        let gate = Gate {
            service: self.name.clone(),
            trust: self.trust.clone(),
            signatures,
            writer: self.writer.clone(),
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
        c?;
        w?;
        r
    }
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
