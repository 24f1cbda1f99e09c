//! Verification: turns an opened claim into checked facts.
//!
//! Why asynchronous steps instead of "call the providers inside the message handler": a
//! provider may be slow or down for a long time, and a claim must never be lost or block the
//! claims behind it. So the consumer only records `ClaimOpened` (inbox + log, then ack); a
//! worker drives every pending claim through its check plan ([`plan`]), recording each reply
//! as a `CheckRecorded` event (published for the award service) the moment it arrives, and
//! emits `ClaimVerified` when the plan is complete. After a restart the pending claims and
//! their already-recorded replies are folded back from the log and only the missing checks
//! are asked again. Requests retry with backoff behind one circuit per provider.

pub mod plan;

use huiqi_bus::request::{request, Circuit, RetryPolicy};
use huiqi_bus::service::{self, Consuming, Core, RecordAndQueue, ServiceConfig};
use huiqi_bus::{BusError, LogWriter, Signatures};
use huiqi_eventlog::{Commit, Pending};
use huiqi_events::checks::Check;
use huiqi_events::payloads::{
    CheckRecorded, ClaimOpened, ClaimVerified, ClaimVerifiedOut, EmbeddedOut,
};
use huiqi_events::{subjects, types, Envelope};
use huiqi_policy::PolicySet;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "verification";

#[derive(Debug, Clone)]
pub struct Settings {
    pub service: ServiceConfig,
    /// Persons per provider request.
    pub chunk_size: usize,
    /// Claims whose checks run at the same time.
    pub claims_in_flight: usize,
    pub retry: RetryPolicy,
}

impl Settings {
    pub fn new(service: ServiceConfig) -> Self {
        Settings {
            service,
            chunk_size: 500,
            claims_in_flight: 256,
            retry: RetryPolicy::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerificationError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("policy: {0}")]
    Policy(#[from] huiqi_policy::PolicyError),
    #[error("event log: {0}")]
    Log(#[from] huiqi_eventlog::LogError),
}

/// A claim whose plan is not complete.
#[derive(Debug, Clone)]
struct Job {
    cause: Envelope,
    opened: ClaimOpened,
    recorded: BTreeMap<(Check, u32), u32>,
}

pub struct App {
    service: Consuming<Handler>,
    worker: Worker,
    rx: mpsc::UnboundedReceiver<Job>,
    resume: Vec<Job>,
}

/// How verification's log is rebuilt from the stream: every opened claim it consumed is
/// recorded (its work resumes from what it had published).
pub type Restore = huiqi_bus::restore::RecordConsumed;

pub async fn build(settings: Settings) -> Result<App, VerificationError> {
    let core = Core::start(SERVICE, &settings.service, &Restore {}).await?;
    // Fold: opened claims, their recorded chunks, and which are verified.
    let mut jobs: BTreeMap<String, Job> = BTreeMap::new();
    let mut known: HashSet<String> = HashSet::new();
    core.fold(|rec| {
        let env = &rec.envelope;
        match env.ty.as_str() {
            types::CLAIM_OPENED => {
                let opened: ClaimOpened = service::data(env)?;
                known.insert(opened.claim_id.clone());
                jobs.insert(
                    opened.claim_id.clone(),
                    Job {
                        cause: env.clone(),
                        opened,
                        recorded: BTreeMap::new(),
                    },
                );
            }
            types::CHECK_RECORDED => {
                let r: CheckRecorded = service::data(env)?;
                if let Some(j) = jobs.get_mut(&r.claim_id) {
                    j.recorded.insert((r.check(), r.chunk), r.chunks);
                }
            }
            types::CLAIM_VERIFIED => {
                let v: ClaimVerified = service::data(env)?;
                // Done only with every check record it promises, in this log or inside it. A
                // log written live always has them (each is committed before the verified
                // claim); one rebuilt from the stream may not, when a record's publish was
                // refused in an election and the instance killed before resending it — award
                // would wait for it for ever. Such a claim is resumed: the missing checks are
                // asked again and recorded under the same ids, and the verified claim follows
                // again (same id).
                let complete = jobs.get(&v.claim_id).is_none_or(|j| {
                    v.checks.iter().all(|(check, chunks)| {
                        (0..*chunks).all(|chunk| {
                            j.recorded.contains_key(&(*check, chunk))
                                || v.records
                                    .iter()
                                    .any(|r| r.record.check() == *check && r.record.chunk == chunk)
                        })
                    })
                });
                if complete {
                    jobs.remove(&v.claim_id);
                } else {
                    tracing::warn!(claim_id = %v.claim_id, "verified claim without every check record it promises (an answer published in part before a rebuild): the missing checks are asked again");
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    let resume: Vec<Job> = jobs.into_values().collect();
    if !resume.is_empty() {
        tracing::info!(claims = resume.len(), "resuming claims left unverified");
    }
    let spec = core.consumer_spec();
    let (tx, rx) = mpsc::unbounded_channel();
    let handler = Handler {
        service: SERVICE,
        ty: types::CLAIM_OPENED,
        writer: core.writer.clone(),
        known,
        key: |o| o.claim_id.clone(),
        check: |_| Ok(()),
        job: |cause, opened| Job {
            cause,
            opened,
            recorded: BTreeMap::new(),
        },
        tx,
    };
    let worker = Worker {
        client: core.client.clone(),
        writer: core.writer.clone(),
        policies: Arc::new(PolicySet::load(settings.service.policy_dir.as_deref())?),
        settings: settings.clone(),
        circuits: Arc::new(
            Check::ALL
                .iter()
                .map(|c| (*c, Circuit::default()))
                .collect(),
        ),
    };
    Ok(App {
        service: Consuming::new(core, spec, handler, Signatures::Required).await?,
        worker,
        rx,
        resume,
    })
}

impl App {
    /// The service's event log (for the operator query responder and audits in-process).
    pub fn log(&self) -> std::sync::Arc<huiqi_eventlog::EventLog> {
        self.service.log()
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), VerificationError> {
        let shutdown = self.service.guard(&shutdown);
        let work = self.worker.run(self.rx, self.resume, shutdown.clone());
        self.service.run(work, shutdown).await?;
        Ok(())
    }
}

type Handler = RecordAndQueue<ClaimOpened, Job>;

/// A check record of the claim being verified, as logged: its check, chunk, event id and data.
type Logged = (Check, u32, String, huiqi_events::Data);

#[derive(Clone)]
struct Worker {
    client: async_nats::Client,
    writer: LogWriter,
    policies: Arc<PolicySet>,
    settings: Settings,
    circuits: Arc<HashMap<Check, Circuit>>,
}

impl Worker {
    async fn run(
        self,
        rx: mpsc::UnboundedReceiver<Job>,
        resume: Vec<Job>,
        shutdown: CancellationToken,
    ) -> Result<(), BusError> {
        let limit = self.settings.claims_in_flight;
        huiqi_bus::service::work_queue(rx, resume, limit, shutdown, move |job, sd| {
            let w = self.clone();
            async move { w.verify(job, sd).await }
        })
        .await
    }

    /// Runs the missing checks of one claim; `Ok` also when stopped by shutdown midway.
    async fn verify(&self, job: Job, shutdown: CancellationToken) -> Result<(), BusError> {
        let app = &job.opened.application;
        let claim_id = job.opened.claim_id.clone();
        let policy = match self.policies.for_application(app) {
            Ok(p) => p,
            Err(_) => self.policies.first(),
        };
        let calls = plan::plan(app, &policy.params, self.settings.chunk_size);
        let mut checks: BTreeMap<Check, u32> = BTreeMap::new();
        for c in &calls {
            checks.insert(c.check, c.chunks);
        }
        let missing: Vec<&plan::Call> = calls
            .iter()
            .filter(|c| !job.recorded.contains_key(&(c.check, c.chunk)))
            .collect();
        // A small roster's replies stay in this log and travel inside the verified claim (one
        // message); a large one's are published as they come, since together they would not
        // fit one message.
        let embed = app.person_ids().len() <= huiqi_events::payloads::EMBED_FACTS_UP_TO;
        let results = futures_util::future::join_all(missing.into_iter().map(|call| {
            let claim_id = claim_id.clone();
            let shutdown = shutdown.clone();
            let cause = &job.cause;
            async move {
                let subject = call.check.subject();
                let circuit = &self.circuits[&call.check];
                let body = serde_json::to_vec(&call.request).expect("a request serializes");
                // The provider's bytes are read once, into the check's typed reply.
                let (reply, attempts) = match request(
                    &self.client,
                    &subject,
                    &body,
                    &self.settings.retry,
                    circuit,
                    &shutdown,
                    |bytes| call.check.read_reply(bytes),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => return Ok(None),
                };
                let data = CheckRecorded {
                    claim_id: claim_id.clone(),
                    chunk: call.chunk,
                    chunks: call.chunks,
                    attempts,
                    reply,
                };
                let index = format!("{}:{}", call.check, call.chunk);
                let env = Envelope::derived(
                    SERVICE,
                    types::CHECK_RECORDED,
                    &claim_id,
                    &data,
                    &cause.id,
                    &index,
                )
                .expect("serializes")
                .caused_by(cause);
                let id = env.id.clone();
                // What the verified claim embeds: the record as logged, not serialized again.
                let logged = (call.check, call.chunk, id, env.data.clone());
                let pending = if embed {
                    Pending::local(env)
                } else {
                    Pending::publish(env, subjects::FACTS_RECORDED)
                };
                self.writer
                    .commit(vec![Commit {
                        inbox_id: None,
                        events: vec![pending],
                    }])
                    .await?;
                Ok::<Option<Logged>, BusError>(Some(logged))
            }
        }))
        .await;
        let mut complete = true;
        let mut records = Vec::new();
        for r in results {
            match r? {
                Some(rec) => records.push(rec),
                None => complete = false,
            }
        }
        if !complete {
            tracing::info!(%claim_id, "verification paused by shutdown; resumes on restart");
            return Ok(());
        }
        if embed {
            // Replies recorded before a restart are read back from this log.
            if !job.recorded.is_empty() {
                for rec in self.writer.log().subject_records(&claim_id)? {
                    if rec.envelope.ty == types::CHECK_RECORDED {
                        let record: CheckRecorded = rec
                            .envelope
                            .data_as()
                            .map_err(|e| BusError::Handler(e.to_string()))?;
                        if job.recorded.contains_key(&(record.check(), record.chunk)) {
                            records.push((
                                record.check(),
                                record.chunk,
                                rec.envelope.id,
                                rec.envelope.data,
                            ));
                        }
                    }
                }
            }
            records.sort_by_key(|r| (r.0, r.1));
            records.dedup_by_key(|r| (r.0, r.1));
        } else {
            records.clear();
        }
        let embedded: Vec<EmbeddedOut> = records
            .iter()
            .map(|(_, _, event_id, record)| EmbeddedOut { event_id, record })
            .collect();
        let verified = ClaimVerifiedOut {
            claim_id: &claim_id,
            application: app,
            checks: &checks,
            records: &embedded,
        };
        let env = Envelope::derived(
            SERVICE,
            types::CLAIM_VERIFIED,
            &claim_id,
            &verified,
            &job.cause.id,
            "0",
        )
        .expect("serializes")
        .caused_by(&job.cause);
        self.writer
            .commit(vec![Commit {
                inbox_id: None,
                events: vec![Pending::publish(env, subjects::CLAIM_VERIFIED)],
            }])
            .await?;
        tracing::info!(%claim_id, calls = calls.len(), "claim verified");
        Ok(())
    }
}
