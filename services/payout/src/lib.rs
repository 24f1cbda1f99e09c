//! Payout: pays each approved award exactly once.
//!
//! Why it is careful: this is where money leaves. The consumer records a payment order (inbox +
//! log, then ack); a worker sends it to the treasury (`huiqi.treasury.pay`), retrying with
//! backoff for as long as the treasury does not answer, and records `PayoutSettled` or
//! `PayoutFailed`. Exactly once rests on three things: one order per award id (a repeated order
//! is ignored), the worker never sends an order whose outcome is recorded, and the treasury is
//! idempotent by award id — so a crash between sending and recording is answered on the retry
//! with the first settlement, not a second payment. Each attempt is logged before it is sent,
//! so an auditor sees every instruction that left the system.

use chrono::{FixedOffset, Utc};
use huiqi_bus::request::{request_json, Circuit, RetryPolicy};
use huiqi_bus::service::{self, work_queue, Consuming, Core, RecordAndQueue, ServiceConfig};
use huiqi_bus::{BusError, LogWriter, Signatures};
use huiqi_eventlog::{Commit, Pending};
use huiqi_events::payloads::{
    PaymentAttempted, PaymentOrdered, PayoutFailed, PayoutSettled, TreasuryPay, TreasuryReply,
    TreasuryStatus,
};
use huiqi_events::{mask, subjects, types, Envelope};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "payout";

#[derive(Debug, Clone)]
pub struct Settings {
    pub service: ServiceConfig,
    pub payments_in_flight: usize,
    pub retry: RetryPolicy,
}

impl Settings {
    pub fn new(service: ServiceConfig) -> Self {
        Settings {
            service,
            payments_in_flight: 256,
            retry: RetryPolicy::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PayoutError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("event log: {0}")]
    Log(#[from] huiqi_eventlog::LogError),
}

#[derive(Debug, Clone)]
struct Job {
    cause: Envelope,
    order: PaymentOrdered,
    attempts: u32,
}

pub struct App {
    service: Consuming<Handler>,
    worker: Worker,
    rx: mpsc::UnboundedReceiver<Job>,
    resume: Vec<Job>,
}

/// A payment order fit to be paid: the award id is the one award derives from the claim
/// (`A-` + the claim's UUID), the amount positive and the account plausible. The signature
/// (award's key, checked before this) proves who ordered it; this proves what.
pub fn check_order(o: &PaymentOrdered) -> Result<(), String> {
    let expected = format!("A-{}", o.claim_id.trim_start_matches("C-"));
    // The claim's award, or one of its supplements (`<award>-S-<8 hex>`).
    let supplement = o
        .award_id
        .strip_prefix(&expected)
        .and_then(|rest| rest.strip_prefix("-S-"))
        .is_some_and(|h| h.len() == 8 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if !o.claim_id.starts_with("C-") || (o.award_id != expected && !supplement) {
        return Err("award_id is not the award of claim_id (nor one of its supplements)".into());
    }
    if o.amount <= huiqi_events::Money::ZERO {
        return Err(format!("amount {} is not positive", o.amount));
    }
    let acct_ok = (8..=34).contains(&o.bank_account.len())
        && o.bank_account.bytes().all(|b| b.is_ascii_digit());
    if !acct_ok {
        return Err(format!(
            "bank account {} is not 8–34 digits",
            mask(&o.bank_account)
        ));
    }
    Ok(())
}

/// How payout's log is rebuilt from the stream: every payment order it consumed is recorded;
/// its attempts and outcomes come back as what it published, so an order with an outcome is
/// never sent again.
pub type Restore = huiqi_bus::restore::RecordConsumed;

pub async fn build(settings: Settings) -> Result<App, PayoutError> {
    let core = Core::start(SERVICE, &settings.service, &Restore {}).await?;
    let mut open: BTreeMap<String, Job> = BTreeMap::new();
    let mut known = HashSet::new();
    core.fold(|rec| {
        let env = &rec.envelope;
        match env.ty.as_str() {
            types::PAYMENT_ORDERED => {
                let order: PaymentOrdered = service::data(env)?;
                if known.insert(order.award_id.clone()) {
                    open.insert(
                        order.award_id.clone(),
                        Job {
                            cause: env.clone(),
                            order,
                            attempts: 0,
                        },
                    );
                }
            }
            types::PAYMENT_ATTEMPTED => {
                let a: PaymentAttempted = service::data(env)?;
                if let Some(j) = open.get_mut(&a.award_id) {
                    j.attempts = j.attempts.max(a.attempt);
                }
            }
            types::PAYOUT_SETTLED => {
                let s: PayoutSettled = service::data(env)?;
                open.remove(&s.award_id);
            }
            types::PAYOUT_FAILED => {
                let f: PayoutFailed = service::data(env)?;
                open.remove(&f.award_id);
            }
            _ => {}
        }
        Ok(())
    })?;
    let resume: Vec<Job> = open.into_values().collect();
    if !resume.is_empty() {
        tracing::info!(
            payments = resume.len(),
            "resuming payments without a recorded outcome"
        );
    }
    let spec = core.consumer_spec();
    let (tx, rx) = mpsc::unbounded_channel();
    let handler = Handler {
        service: SERVICE,
        ty: types::PAYMENT_ORDERED,
        writer: core.writer.clone(),
        known,
        key: |o| o.award_id.clone(),
        check: check_order,
        job: |cause, order| Job {
            cause,
            order,
            attempts: 0,
        },
        tx,
    };
    let worker = Worker {
        client: core.client.clone(),
        writer: core.writer.clone(),
        settings: settings.clone(),
        circuit: Arc::new(Circuit::default()),
        fence: core.fence(),
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

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), PayoutError> {
        let shutdown = self.service.guard(&shutdown);
        let worker = self.worker;
        let limit = worker.settings.payments_in_flight;
        let work = work_queue(
            self.rx,
            self.resume,
            limit,
            shutdown.clone(),
            move |job, sd| {
                let w = worker.clone();
                async move { w.pay(job, sd).await }
            },
        );
        self.service.run(work, shutdown).await?;
        Ok(())
    }
}

type Handler = RecordAndQueue<PaymentOrdered, Job>;

#[derive(Clone)]
struct Worker {
    client: async_nats::Client,
    writer: LogWriter,
    settings: Settings,
    circuit: Arc<Circuit>,
    /// Money moves only while this instance holds payout's lease.
    fence: huiqi_bus::lease::Fence,
}

impl Worker {
    async fn pay(&self, job: Job, shutdown: CancellationToken) -> Result<(), BusError> {
        let o = &job.order;
        let attempt = job.attempts + 1;
        let note = Envelope::derived(
            SERVICE,
            types::PAYMENT_ATTEMPTED,
            &o.claim_id,
            &PaymentAttempted {
                award_id: o.award_id.clone(),
                attempt,
            },
            &job.cause.id,
            &attempt.to_string(),
        )
        .expect("serializes")
        .caused_by(&job.cause);
        self.writer
            .commit(vec![Commit {
                inbox_id: None,
                // Kept in payout's log (auditors see every instruction that left), not
                // published: the stream carries the outcome.
                events: vec![Pending::local(note)],
            }])
            .await?;
        let request = serde_json::to_value(TreasuryPay {
            award_id: o.award_id.clone(),
            payee_uscc: o.payee_uscc.clone(),
            bank_account: o.bank_account.clone(),
            amount: o.amount,
        })
        .expect("serializes");
        let reply = loop {
            // Only the lease holder instructs the treasury: an instance whose lease lapsed
            // waits for it, one that lost it leaves the order to the instance that took over
            // (which pays it under the same award id).
            if !self.fence.wait_held(&shutdown).await {
                tracing::info!(award_id = %o.award_id, "payment left to the instance holding payout's lease");
                return Ok(());
            }
            let value = match request_json(
                &self.client,
                subjects::TREASURY_PAY,
                &request,
                &self.settings.retry,
                &self.circuit,
                &shutdown,
            )
            .await
            {
                Ok((v, _)) => v,
                Err(_) => {
                    tracing::info!(award_id = %o.award_id, "payment paused by shutdown; resumes on restart");
                    return Ok(());
                }
            };
            match serde_json::from_value::<TreasuryReply>(value) {
                Ok(r) if r.status == TreasuryStatus::Refused || r.bank_reference.is_some() => {
                    break r
                }
                Ok(_) | Err(_) => {
                    tracing::warn!(award_id = %o.award_id, "treasury reply does not fit the contract; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(self.settings.retry.max_backoff) => {}
                    }
                }
            }
        };
        let shanghai = FixedOffset::east_opt(8 * 3600).expect("valid offset");
        let (ty, subject, data) = match reply.status {
            TreasuryStatus::Settled => {
                tracing::info!(award_id = %o.award_id, amount = %o.amount, account = %mask(&o.bank_account), "payout settled");
                metrics::counter!("huiqi_payouts_total", "outcome" => "settled").increment(1);
                (
                    types::PAYOUT_SETTLED,
                    subjects::PAYOUTS_SETTLED,
                    serde_json::to_value(PayoutSettled {
                        award_id: o.award_id.clone(),
                        claim_id: o.claim_id.clone(),
                        amount: o.amount,
                        bank_reference: reply.bank_reference.unwrap_or_default(),
                        settled_at: Utc::now().with_timezone(&shanghai),
                    }),
                )
            }
            TreasuryStatus::Refused => {
                let reason = reply
                    .reason
                    .unwrap_or_else(|| "refused without a reason".into());
                tracing::warn!(award_id = %o.award_id, %reason, account = %mask(&o.bank_account), "payout refused by the treasury");
                metrics::counter!("huiqi_payouts_total", "outcome" => "failed").increment(1);
                (
                    types::PAYOUT_FAILED,
                    subjects::PAYOUTS_FAILED,
                    serde_json::to_value(PayoutFailed {
                        award_id: o.award_id.clone(),
                        claim_id: o.claim_id.clone(),
                        amount: o.amount,
                        reason,
                    }),
                )
            }
        };
        let env = Envelope::derived(
            SERVICE,
            ty,
            &o.claim_id,
            &data.expect("serializes"),
            &job.cause.id,
            "0",
        )
        .expect("serializes")
        .caused_by(&job.cause);
        self.writer
            .commit(vec![Commit {
                inbox_id: None,
                events: vec![Pending::publish(env, subject)],
            }])
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod order_tests {
    use super::*;

    fn order(award_id: &str) -> PaymentOrdered {
        PaymentOrdered {
            award_id: award_id.into(),
            claim_id: "C-1234".into(),
            application_id: "P-1".into(),
            measure: "M19".into(),
            payee_uscc: "91330302000001086C".into(),
            bank_account: "6228000000001080".into(),
            amount: huiqi_events::Money::yuan(100),
        }
    }

    #[test]
    fn only_the_claims_award_or_one_of_its_supplements_is_paid() {
        assert!(check_order(&order("A-1234")).is_ok());
        assert!(check_order(&order("A-1234-S-0a1b2c3d")).is_ok());
        for bad in [
            "A-9999",
            "A-1234-S-0a1b2c3",
            "A-1234-S-0a1b2c3g",
            "A-1234-S-0a1b2c3d-S-0a1b2c3d",
            "A-1234-X-0a1b2c3d",
            "A-12345",
        ] {
            assert!(check_order(&order(bad)).is_err(), "{bad}");
        }
    }
}
