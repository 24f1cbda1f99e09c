//! What every service starts with and how it stops: connect, make sure the stream exists, open
//! its sled log, start the group writer and the outbox relay; on shutdown let the consumer and
//! workers reach a safe state first, then let the relay publish what they appended.

use crate::consumer::{self, BatchHandler, ConsumerSpec, Delivery};
use crate::relay::Relay;
use crate::writer::LogWriter;
use crate::BusError;
use async_nats::jetstream;
use huiqi_eventlog::{EventLog, Pending};
use huiqi_events::payloads::MessageParked;
use huiqi_events::{subjects, types, Envelope};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub struct Core {
    pub name: String,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub writer: LogWriter,
    relay: Relay,
}

impl Core {
    /// Connects, ensures the stream and opens the log in `dir` (created if missing).
    pub async fn start(name: &str, nats_url: &str, dir: &Path) -> Result<Core, BusError> {
        std::fs::create_dir_all(dir).map_err(|e| BusError::Setup {
            what: format!("data dir {}", dir.display()),
            message: e.to_string(),
        })?;
        let log = Arc::new(EventLog::open(dir)?);
        let client = crate::connect(nats_url, &format!("huiqi-{name}")).await?;
        let js = jetstream::new(client.clone());
        crate::setup::ensure_stream(&js).await?;
        let relay = Relay::new(name, log.clone(), js.clone());
        let writer = LogWriter::spawn(log, relay.waker());
        Ok(Core {
            name: name.to_string(),
            client,
            js,
            writer,
            relay,
        })
    }

    pub fn log(&self) -> &Arc<EventLog> {
        self.writer.log()
    }

    /// Creates or updates this service's durable consumer.
    pub async fn consumer(
        &self,
        spec: &ConsumerSpec,
    ) -> Result<jetstream::consumer::Consumer<jetstream::consumer::pull::Config>, BusError> {
        crate::setup::ensure_consumer(&self.js, spec).await
    }

    /// Runs the consumer loop and `work` until `shutdown`; then stops the relay after one final
    /// drain, so every event appended before the stop is published.
    pub async fn run<H, W>(
        self,
        consumer: jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
        spec: ConsumerSpec,
        handler: H,
        work: W,
        shutdown: CancellationToken,
    ) -> Result<(), BusError>
    where
        H: BatchHandler + 'static,
        W: Future<Output = Result<(), BusError>> + Send + 'static,
    {
        let relay_stop = CancellationToken::new();
        let relay = tokio::spawn(self.relay.run(relay_stop.clone()));
        let consume = consumer::run(consumer, spec, handler, shutdown.clone());
        let (c, w) = tokio::join!(consume, work);
        relay_stop.cancel();
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

/// The event that records a poison message in a service's log and publishes it on
/// `huiqi.parked.<service>` for operators (the original bytes included, so it can be replayed).
pub fn parked(service: &str, d: &Delivery, reason: &str) -> Pending {
    let data = MessageParked {
        service: service.to_string(),
        subject: d.subject.clone(),
        stream_sequence: d.stream_sequence,
        delivered: d.delivered.max(0) as u64,
        reason: reason.to_string(),
        payload: String::from_utf8_lossy(&d.payload).into_owned(),
    };
    let env = Envelope::new(service, types::MESSAGE_PARKED, &d.fallback_id(), &data)
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
/// records each incoming event in the log (with its inbox mark), ignores a second event for a
/// key it already has (e.g. the same claim under another event id), parks what it cannot
/// read, and — only once the batch is durable — hands each new job to the worker queue.
pub struct RecordAndQueue<T, J> {
    pub service: &'static str,
    pub writer: crate::LogWriter,
    /// Keys already recorded (folded from the log at start).
    pub known: std::collections::HashSet<String>,
    pub key: fn(&T) -> String,
    pub job: fn(Envelope, T) -> J,
    pub tx: tokio::sync::mpsc::UnboundedSender<J>,
}

impl<T, J> BatchHandler for RecordAndQueue<T, J>
where
    T: serde::de::DeserializeOwned + Send,
    J: Send,
{
    async fn handle(&mut self, batch: Vec<Delivery>) -> Result<Vec<crate::Disposition>, BusError> {
        use crate::Disposition;
        use huiqi_eventlog::Commit;
        let mut commits = Vec::with_capacity(batch.len());
        let mut dispositions = Vec::with_capacity(batch.len());
        let mut jobs = Vec::new();
        for d in &batch {
            let parsed = Envelope::decode(&d.payload)
                .and_then(huiqi_events::types::upcast)
                .map_err(|e| e.to_string())
                .and_then(|env| {
                    env.data_as::<T>()
                        .map(|t| (env, t))
                        .map_err(|e| e.to_string())
                });
            match parsed {
                Ok((env, item)) => {
                    let key = (self.key)(&item);
                    if self.known.insert(key.clone()) {
                        commits.push(Commit {
                            inbox_id: Some(env.id.clone()),
                            events: vec![Pending::local(env.clone())],
                        });
                        jobs.push((self.job)(env, item));
                    } else {
                        tracing::warn!(service = self.service, %key, "a second event for the same work ignored");
                        commits.push(Commit {
                            inbox_id: Some(env.id.clone()),
                            events: vec![],
                        });
                    }
                    dispositions.push(Disposition::Ack);
                }
                Err(reason) => {
                    tracing::error!(
                        service = self.service,
                        stream_seq = d.stream_sequence,
                        reason = %huiqi_events::mask_digit_runs(&reason),
                        "unreadable event parked"
                    );
                    commits.push(Commit {
                        inbox_id: Some(d.msg_id.clone().unwrap_or_else(|| d.fallback_id())),
                        events: vec![parked(self.service, d, &reason)],
                    });
                    dispositions.push(Disposition::Term);
                }
            }
        }
        // Durable first; only then may the worker start (and the messages be acked).
        self.writer.commit(commits).await?;
        for job in jobs {
            let _ = self.tx.send(job);
        }
        Ok(dispositions)
    }
}

/// What a service binary reads from its environment: `NATS_URL` (default
/// `nats://127.0.0.1:4222`) and `HUIQI_DATA_DIR` (default `huiqi-data`, the service using its
/// own sub-directory). It also installs the log subscriber (`RUST_LOG`, default `info`).
pub struct BinaryEnv {
    pub nats_url: String,
    pub data_dir: std::path::PathBuf,
}

impl BinaryEnv {
    pub fn read(service: &str) -> BinaryEnv {
        let filter =
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
        tracing_subscriber::fmt().with_env_filter(filter).init();
        let nats_url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
        let dir = std::env::var("HUIQI_DATA_DIR").unwrap_or_else(|_| "huiqi-data".into());
        BinaryEnv {
            nats_url,
            data_dir: Path::new(&dir).join(service),
        }
    }

    /// A token cancelled on Ctrl-C or SIGTERM, so the service stops in a safe state.
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
            t.cancel();
        });
        token
    }
}

/// A service's consuming half, ready to run: its core, its durable consumer and the handler.
pub struct Consuming<H> {
    core: Core,
    spec: ConsumerSpec,
    consumer: jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
    handler: H,
}

impl<H: BatchHandler + 'static> Consuming<H> {
    /// Creates or updates the durable consumer `spec` and pairs it with `handler`.
    pub async fn new(core: Core, spec: ConsumerSpec, handler: H) -> Result<Self, BusError> {
        let consumer = core.consumer(&spec).await?;
        Ok(Consuming {
            core,
            spec,
            consumer,
            handler,
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
            .run(self.consumer, self.spec, self.handler, work, shutdown)
            .await
    }
}
