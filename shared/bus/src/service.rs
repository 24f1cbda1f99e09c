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
