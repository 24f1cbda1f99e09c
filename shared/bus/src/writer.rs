//! Group commit: many tasks hand their [`Commit`]s to one writer thread, which applies every
//! request waiting at that moment in one sled transaction and one flush, then answers each.
//! Flushing per event costs ~10× throughput on this hardware; flushing per group costs ~6 %.

use crate::relay::RelayWaker;
use crate::BusError;
use huiqi_eventlog::{Applied, Commit, EventLog, LogError};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// A group write slower than this is worth a warning: messages wait behind it.
const SLOW: std::time::Duration = std::time::Duration::from_millis(500);

type Request = (Vec<Commit>, oneshot::Sender<Result<Vec<Applied>, String>>);

/// Completes when a submitted group of commits is durable.
pub struct Ticket(oneshot::Receiver<Result<Vec<Applied>, String>>);

impl std::future::Future for Ticket {
    type Output = Result<Vec<Applied>, BusError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|r| {
            r.map_err(|_| BusError::Log(LogError::Meta("log writer stopped".into())))?
                .map_err(|e| BusError::Log(LogError::Meta(e)))
        })
    }
}

/// A handle to the writer thread; clone it freely. The thread ends on [`LogWriter::close`]
/// (after the commits queued before it) or when every handle is gone.
#[derive(Clone)]
pub struct LogWriter {
    tx: mpsc::Sender<Option<Request>>,
    log: Arc<EventLog>,
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl LogWriter {
    pub fn spawn(log: Arc<EventLog>, waker: RelayWaker) -> Self {
        let (tx, mut rx) = mpsc::channel::<Option<Request>>(1024);
        let thread_log = log.clone();
        let handle = std::thread::Builder::new()
            .name("huiqi-log-writer".into())
            .spawn(move || {
                let mut closing = false;
                while let Some(Some(first)) = (!closing).then(|| rx.blocking_recv()).flatten() {
                    let mut group = vec![first];
                    let mut events = group[0].0.iter().map(|c| c.events.len()).sum::<usize>();
                    while events < 20_000 {
                        match rx.try_recv() {
                            Ok(Some(more)) => {
                                events += more.0.iter().map(|c| c.events.len()).sum::<usize>();
                                group.push(more);
                            }
                            Ok(None) => {
                                closing = true;
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    // Move the commits out (no clone of their events) and remember the sizes.
                    let mut sizes = Vec::with_capacity(group.len());
                    let mut replies = Vec::with_capacity(group.len());
                    let mut all: Vec<Commit> = Vec::new();
                    for (commits, reply) in group {
                        sizes.push(commits.len());
                        replies.push(reply);
                        all.extend(commits);
                    }
                    let started = std::time::Instant::now();
                    let result = thread_log
                        .commit_published(&all)
                        .map(|(applied, published)| {
                            waker.hand(published);
                            applied
                        });
                    let took = started.elapsed();
                    if took > SLOW {
                        tracing::warn!(
                            commits = all.len(),
                            events,
                            ms = took.as_millis() as u64,
                            "slow log write (sled batch and flush)"
                        );
                    }
                    drop(all);
                    let mut offset = 0;
                    for (n, reply) in sizes.into_iter().zip(replies) {
                        let answer = match &result {
                            Ok(applied) => Ok(applied[offset..offset + n].to_vec()),
                            Err(e) => Err(e.to_string()),
                        };
                        offset += n;
                        let _ = reply.send(answer);
                    }
                    waker.wake();
                }
            })
            .expect("spawn log writer thread");
        LogWriter {
            tx,
            log,
            thread: Arc::new(std::sync::Mutex::new(Some(handle))),
        }
    }

    /// Applies what is queued, stops the thread and waits for it, so the sled log can be
    /// closed (and its directory lock released) as soon as the last `Arc` goes.
    pub async fn close(&self) {
        let _ = self.tx.send(None).await;
        let handle = self.thread.lock().expect("writer handle lock").take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }

    /// Applies the commits durably (flushed) and returns what each did.
    pub async fn commit(&self, commits: Vec<Commit>) -> Result<Vec<Applied>, BusError> {
        self.submit(commits).await?.await
    }

    /// Hands the commits to the writer and returns at once with a [`Ticket`] that completes
    /// when they are durable. Tickets complete in the order they were submitted.
    pub async fn submit(&self, commits: Vec<Commit>) -> Result<Ticket, BusError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Some((commits, reply)))
            .await
            .map_err(|_| BusError::Log(LogError::Meta("log writer stopped".into())))?;
        Ok(Ticket(answer))
    }

    pub fn log(&self) -> &Arc<EventLog> {
        &self.log
    }
}
