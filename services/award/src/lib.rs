//! Award: decides verified claims by the letter of the policy.
//!
//! Why it is built around one fold: a decision depends on the facts *and* on everything decided
//! before it (one M1 per enterprise, a person once, caps across claims). The service's state —
//! facts waiting for their claim, and the [`History`] of earlier awards — is a fold over its own
//! log ([`State::apply`]); the live path appends events and applies them through the same fold,
//! and [`replay`] re-runs that fold over the log, re-deriving every decision under the policy
//! version it was made with and reporting any that differ. Decisions come from
//! `huiqi_policy::evaluate`, which has no clock and no I/O.
//!
//! Outputs, per claim exactly once: `huiqi.awards.approved|rejected.<measure>`, a payment order
//! for the payout service when approved, and M4/M5 entitlement events.

use huiqi_bus::consumer::{BatchHandler, Delivery, Disposition, Handled, Signatures};
use huiqi_bus::restore::{Consumed, RestoreRules};
use huiqi_bus::service::{self, parked, Consuming, Core, ServiceConfig};
use huiqi_bus::{BusError, LogWriter};
use huiqi_eventlog::{Commit, EventLog, Pending};
use huiqi_events::payloads::{
    AwardDecision, AwardStatus, CheckRecorded, ClaimVerified, CountedElsewhere,
    DataPackageEntitlement, DataPackageGrant, Facts, ForeignCount, PaymentOrdered, PointsGrant,
    ResidentPointsEntitlement, GRANTS_PER_EVENT,
};
use huiqi_events::{subjects, types, Envelope};
use huiqi_policy::{Entitlement, Evaluation, History, PolicySet};
use std::collections::{BTreeMap, HashMap};
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "award";

#[derive(Debug, Clone)]
pub struct Settings {
    pub service: ServiceConfig,
}

impl Settings {
    pub fn new(service: ServiceConfig) -> Self {
        Settings { service }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AwardError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("event log: {0}")]
    Log(#[from] huiqi_eventlog::LogError),
    #[error("policy: {0}")]
    Policy(#[from] huiqi_policy::PolicyError),
    #[error("award log record {seq} cannot be read: {reason}")]
    Unreadable { seq: u64, reason: String },
    #[error("{0}")]
    Refused(String),
}

pub mod rebuilt;
pub mod whatif;
pub use whatif::{supplement, whatif, SupplementOutcome, WhatIfReport};

/// The award id of a claim's one award.
pub fn award_id_for(claim_id: &str) -> String {
    format!("A-{}", claim_id.trim_start_matches("C-"))
}

/// The award service's state, folded from its log.
#[derive(Default)]
pub struct State {
    pub history: History,
    /// Check records waiting for their claim's decision, with their event ids.
    facts: HashMap<String, Vec<(String, CheckRecorded)>>,
    /// Verified claims not decided yet: waiting for a check reply that has not arrived (a
    /// redelivery after a restart can bring it after the verified marker).
    verified: HashMap<String, (Envelope, ClaimVerified)>,
    /// Decided claims, with their applicant (entitlement events name only the claim).
    decided: HashMap<String, String>,
    /// Claims with a supplementary award, and the version it was decided under.
    supplemented: HashMap<String, String>,
    /// Approved decisions with money whose payment order has not followed in the fold, with
    /// the verified claim they were decided on. In a log written live the order is the next
    /// record; in one rebuilt from a stream the order never reached, it stays here
    /// ([`State::missing_orders`]).
    unordered: HashMap<String, (AwardDecision, Option<(Envelope, ClaimVerified)>)>,
}

impl State {
    /// Folds one logged event (start-up and replay); an event it cannot decode is an error,
    /// never silently skipped. The live path calls the typed methods below directly with the
    /// values it already holds; both paths share them.
    pub fn apply(&mut self, env: &Envelope) -> Result<(), String> {
        match env.ty.as_str() {
            types::CHECK_RECORDED => {
                let r: CheckRecorded = service::data(env)?;
                self.on_check(&env.id, r);
            }
            types::CLAIM_VERIFIED => self.on_verified(env.clone(), service::data(env)?),
            types::AWARD_DECIDED => {
                let d: AwardDecision = service::data(env)?;
                let input = self.verified.remove(&d.claim_id);
                self.on_decision(&d);
                if d.status == AwardStatus::Approved && d.total > huiqi_events::Money::ZERO {
                    self.unordered.insert(d.claim_id.clone(), (d, input));
                }
            }
            types::PAYMENT_ORDERED => {
                let o: PaymentOrdered = service::data(env)?;
                self.unordered.remove(&o.claim_id);
            }
            types::COUNTED_ELSEWHERE => {
                let c: CountedElsewhere = service::data(env)?;
                self.on_counted_elsewhere(&c);
            }
            types::AWARD_SUPPLEMENTED => {
                // The claim counts as its new decision does: the old counts are withdrawn.
                let s: huiqi_events::payloads::AwardSupplement = service::data(env)?;
                self.history.withdraw(&s.claim_id, &s.replaces_counts);
                self.history.add(&s.claim_id, &s.applicant_uscc, &s.counts);
                self.supplemented
                    .insert(s.claim_id.clone(), s.policy_version.clone());
            }
            types::ENTITLEMENT_DATA_PACKAGE => {
                let e: DataPackageEntitlement = service::data(env)?;
                let by = self.applicant_of(&e.claim_id);
                let counts: Vec<_> = e
                    .grants
                    .iter()
                    .map(|g| huiqi_policy::measures::m4::granted(&g.phone))
                    .collect();
                self.history.add(&e.claim_id, &by, &counts);
            }
            types::ENTITLEMENT_RESIDENT_POINTS => {
                let e: ResidentPointsEntitlement = service::data(env)?;
                let by = self.applicant_of(&e.claim_id);
                let counts: Vec<_> = e
                    .grants
                    .iter()
                    .map(|g| huiqi_policy::measures::m5::granted(&g.id_number))
                    .collect();
                self.history.add(&e.claim_id, &by, &counts);
            }
            _ => {}
        }
        Ok(())
    }

    /// Payment orders missing after their approved decisions at the end of a fold: what a
    /// log rebuilt from the stream lacks when the instance that decided died after publishing
    /// the decision but before its order (the relay publishes a commit's events one after
    /// another). Each is derived again from the decision and the verified claim, under the
    /// same id.
    pub fn missing_orders(&mut self) -> Vec<Pending> {
        let mut out = Vec::new();
        for (claim, (d, input)) in self.unordered.drain() {
            match input {
                Some((cause, v)) => out.extend(order_event(&cause, &v, &d)),
                None => {
                    tracing::error!(claim_id = %claim, "approved decision without payment order and without its verified claim in the log: it waits for an operator")
                }
            }
        }
        out
    }

    /// Counts of other partitions' claims a decision met: they join the history as theirs.
    pub fn on_counted_elsewhere(&mut self, c: &CountedElsewhere) {
        for f in &c.counts {
            self.history.add(
                &f.claim_id,
                &f.applicant_uscc,
                std::slice::from_ref(&f.count),
            );
        }
    }

    /// A logged verified claim (`v`, decoded from `env`): it waits for its decision.
    pub fn on_verified(&mut self, env: Envelope, mut v: ClaimVerified) {
        self.take_embedded(&mut v);
        self.verified.insert(v.claim_id.clone(), (env, v));
    }

    /// A check reply arrived for a claim not yet decided.
    pub fn on_check(&mut self, event_id: &str, r: CheckRecorded) {
        if !self.decided.contains_key(&r.claim_id) {
            self.facts
                .entry(r.claim_id.clone())
                .or_default()
                .push((event_id.to_string(), r));
        }
    }

    /// A decision was recorded: what it counted joins the history (rejected decisions count
    /// too: persons towards a cumulative threshold, prior payments used); the claim's facts are
    /// dropped.
    pub fn on_decision(&mut self, d: &AwardDecision) {
        self.history.add(&d.claim_id, &d.applicant_uscc, &d.counts);
        self.decided
            .insert(d.claim_id.clone(), d.applicant_uscc.clone());
        self.facts.remove(&d.claim_id);
    }

    /// Moves the check records a verified claim carries into the claim's facts.
    pub fn take_embedded(&mut self, v: &mut ClaimVerified) {
        for e in std::mem::take(&mut v.records) {
            self.on_check(&e.event_id, e.record);
        }
    }

    /// The applicant of a decided claim (entitlement events name only the claim).
    fn applicant_of(&self, claim_id: &str) -> String {
        self.decided.get(claim_id).cloned().unwrap_or_default()
    }

    /// The live path's fold of one evaluation: the same effects as applying its events.
    pub fn on_evaluation(&mut self, e: &Evaluation) {
        self.on_decision(&e.decision);
        let grants: Vec<_> = e.entitlements.iter().map(Entitlement::count).collect();
        self.history
            .add(&e.decision.claim_id, &e.decision.applicant_uscc, &grants);
    }

    pub fn is_decided(&self, claim_id: &str) -> bool {
        self.decided.contains_key(claim_id)
    }

    /// The first check reply `v` promises that has not arrived, if any.
    pub fn missing(&self, v: &ClaimVerified) -> Option<String> {
        let got = self
            .facts
            .get(&v.claim_id)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for (check, chunks) in &v.checks {
            for chunk in 0..*chunks {
                if !got
                    .iter()
                    .any(|(_, r)| r.check() == *check && r.chunk == chunk)
                {
                    return Some(format!(
                        "check `{check}` chunk {chunk} of {chunks} has not arrived"
                    ));
                }
            }
        }
        None
    }

    /// Takes the claim's facts out of the state, when every chunk `checks` promises has
    /// arrived (they are left in place otherwise), with the ids of the check records used (by
    /// check and chunk; a repeated chunk counts once). A decision follows, which drops them.
    pub fn take_facts(&mut self, v: &ClaimVerified) -> Result<(Facts, Vec<String>), String> {
        if let Some(why) = self.missing(v) {
            return Err(why);
        }
        let mut records = self.facts.remove(&v.claim_id).unwrap_or_default();
        records.retain(|(_, r)| v.checks.contains_key(&r.check()));
        records.sort_by_key(|(_, r)| (r.check(), r.chunk));
        records.dedup_by_key(|(_, r)| (r.check(), r.chunk));
        let ids = records.iter().map(|(id, _)| id.clone()).collect();
        let facts = Facts::assemble(records.into_iter().map(|(_, r)| r))?;
        Ok((facts, ids))
    }

    /// Decides a verified claim against the history so far.
    pub fn evaluate(
        &mut self,
        policies: &PolicySet,
        policy_version: Option<&str>,
        v: &ClaimVerified,
    ) -> Result<Evaluation, String> {
        let policy = match policy_version {
            Some(version) => policies.get(version).map_err(|e| e.to_string())?,
            None => policies
                .for_application(&v.application)
                .unwrap_or_else(|_| policies.first()),
        };
        let (facts, ids) = self.take_facts(v)?;
        let mut e =
            huiqi_policy::evaluate(policy, &v.claim_id, &v.application, &facts, &self.history);
        e.decision.check_records = ids;
        Ok(e)
    }
}

/// The payment order of an approved decision with money to pay (None otherwise).
pub fn order_event(cause: &Envelope, v: &ClaimVerified, d: &AwardDecision) -> Option<Pending> {
    if d.status != AwardStatus::Approved || d.total <= huiqi_events::Money::ZERO {
        return None;
    }
    let order = PaymentOrdered {
        award_id: award_id_for(&d.claim_id),
        claim_id: d.claim_id.clone(),
        application_id: d.application_id.clone(),
        measure: d.measure.clone(),
        payee_uscc: d.applicant_uscc.clone(),
        bank_account: v.application.applicant.bank_account.clone(),
        amount: d.total,
    };
    let env = Envelope::derived(
        SERVICE,
        types::PAYMENT_ORDERED,
        &d.claim_id,
        &order,
        &cause.id,
        "0",
    )
    .expect("serializes")
    .caused_by(cause);
    Some(Pending::publish(env, subjects::PAYMENT_ORDERED))
}

/// The counted-elsewhere event of a decision, logged (and published) right before it.
pub fn counted_elsewhere_event(cause: &Envelope, c: &CountedElsewhere) -> Pending {
    let env = Envelope::derived(
        SERVICE,
        types::COUNTED_ELSEWHERE,
        &c.claim_id,
        c,
        &cause.id,
        "0",
    )
    .expect("serializes")
    .caused_by(cause);
    Pending::publish(env, subjects::COUNTED_ELSEWHERE)
}

/// The events one decision produces, in order.
pub fn decision_events(cause: &Envelope, v: &ClaimVerified, e: &Evaluation) -> Vec<Pending> {
    let d = &e.decision;
    let approved = d.status == AwardStatus::Approved;
    let mut out = Vec::new();
    let env = Envelope::derived(
        SERVICE,
        types::AWARD_DECIDED,
        &d.claim_id,
        d,
        &cause.id,
        "0",
    )
    .expect("serializes")
    .caused_by(cause)
    .with_policy_version(&d.policy_version);
    out.push(Pending::publish(
        env,
        subjects::award_subject(approved, &d.measure),
    ));
    out.extend(order_event(cause, v, d));
    out.extend(entitlement_events(cause, e));
    out
}

/// The M4/M5 entitlement events of a decision: one event per recipient organisation (each
/// carrier; the New Resident Service Center), at most GRANTS_PER_EVENT grants an event. (The
/// rebuilt-answers check derives only these.)
pub fn entitlement_events(cause: &Envelope, e: &Evaluation) -> Vec<Pending> {
    let d = &e.decision;
    let mut out = Vec::new();
    if e.entitlements.is_empty() {
        return out;
    }
    let award_id = award_id_for(&d.claim_id);
    let mut packages: BTreeMap<&str, Vec<DataPackageGrant>> = BTreeMap::new();
    let mut points: Vec<PointsGrant> = Vec::new();
    for ent in &e.entitlements {
        match ent {
            Entitlement::DataPackage {
                phone,
                carrier,
                gigabytes,
                ..
            } => packages.entry(carrier).or_default().push(DataPackageGrant {
                phone: phone.clone(),
                carrier: carrier.clone(),
                gigabytes: *gigabytes,
            }),
            Entitlement::ResidentPoints { person, points: p } => points.push(PointsGrant {
                id_number: person.clone(),
                points: *p,
            }),
        }
    }
    // Generic, so each kind of entitlement is serialized straight from its type (no JSON tree
    // between the struct and the event's bytes).
    fn event<T: serde::Serialize>(
        cause: &Envelope,
        claim: &str,
        ty: &str,
        data: &T,
        index: String,
    ) -> Envelope {
        Envelope::derived(SERVICE, ty, claim, data, &cause.id, &index)
            .expect("serializes")
            .caused_by(cause)
    }
    for (carrier, grants) in packages {
        for (n, chunk) in grants.chunks(GRANTS_PER_EVENT).enumerate() {
            let data = DataPackageEntitlement {
                claim_id: d.claim_id.clone(),
                award_id: award_id.clone(),
                grants: chunk.to_vec(),
            };
            let env = event(
                cause,
                &d.claim_id,
                types::ENTITLEMENT_DATA_PACKAGE,
                &data,
                format!("{carrier}:{n}"),
            );
            out.push(Pending::publish(env, subjects::ENTITLEMENT_DATA_PACKAGE));
        }
    }
    for (n, chunk) in points.chunks(GRANTS_PER_EVENT).enumerate() {
        let data = ResidentPointsEntitlement {
            claim_id: d.claim_id.clone(),
            award_id: award_id.clone(),
            grants: chunk.to_vec(),
        };
        let env = event(
            cause,
            &d.claim_id,
            types::ENTITLEMENT_RESIDENT_POINTS,
            &data,
            n.to_string(),
        );
        out.push(Pending::publish(env, subjects::ENTITLEMENT_RESIDENT_POINTS));
    }
    out
}

pub struct App {
    service: Consuming<Handler>,
}

/// The id of the decision award derives from a verified claim: proof, when restoring the
/// award log, that the claim was decided.
pub fn decision_id_for(verified_event_id: &str) -> String {
    huiqi_events::derived_id(SERVICE, verified_event_id, types::AWARD_DECIDED, "0")
}

/// How award's log is rebuilt from the stream: every check record it consumed is recorded; a
/// verified claim only with its decision (it is logged in the same commit as the decision), so
/// one not yet decided is delivered again and decided then.
pub struct Restore;

impl RestoreRules for Restore {
    fn consumed(&self, _payload: &[u8], env: Option<&Envelope>, _stream_seq: u64) -> Consumed {
        let Some(env) = env else {
            return Consumed::Ignore;
        };
        match env.ty.as_str() {
            types::CLAIM_VERIFIED => Consumed::RecordIfAnswered {
                inbox: env.id.clone(),
                proofs: vec![decision_id_for(&env.id)],
            },
            _ => Consumed::Record {
                inbox: env.id.clone(),
            },
        }
    }

    fn checks_answers_after_rebuild(&self) -> bool {
        true
    }
}

pub async fn build(settings: Settings) -> Result<App, AwardError> {
    let core = Core::start(SERVICE, &settings.service, &Restore {}).await?;
    let policies = PolicySet::load(settings.service.policy_dir.as_deref())?;
    let mut state = State::default();
    // The first start of a rebuilt log derives every decision again (rebuilt.rs).
    let mut check = core
        .log()
        .answers_unchecked()?
        .then(rebuilt::AnswerCheck::default);
    core.fold(|rec| match check.as_mut() {
        Some(c) => c.apply(&mut state, &policies, &rec.envelope),
        None => state.apply(&rec.envelope),
    })?;
    let mut repaired = state.missing_orders();
    let orders = repaired.len();
    let checked = check.is_some();
    if let Some(c) = check {
        tracing::info!(
            decisions = c.decisions,
            differing = c.differing.len(),
            "decisions of the rebuilt log derived again"
        );
        repaired.extend(c.missing());
    }
    if !repaired.is_empty() {
        tracing::warn!(orders, entitlement_events = repaired.len() - orders, "events of an answer published in part before a rebuild (missing after their decisions): derived again under the same ids");
        core.writer
            .commit(vec![Commit {
                inbox_id: None,
                events: repaired,
            }])
            .await?;
    }
    if checked {
        // After the commit above: a kill before it checks again at the next start.
        core.log().answers_checked()?;
    }
    let spec = core.consumer_spec();
    // Split: the counts that cross partitions are taken in the replicated bucket.
    let counts = if core.partition().is_split() {
        Some(huiqi_bus::reserve::open_bucket(&core.js).await?)
    } else {
        None
    };
    let handler = Handler {
        writer: core.writer.clone(),
        state,
        policies,
        counts,
    };
    Ok(App {
        service: Consuming::new(core, spec, handler, Signatures::Required).await?,
    })
}

impl App {
    /// The service's event log (for the operator query responder and audits in-process).
    pub fn log(&self) -> std::sync::Arc<huiqi_eventlog::EventLog> {
        self.service.log()
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AwardError> {
        let idle = async { Ok(()) };
        self.service.run(idle, shutdown).await?;
        Ok(())
    }
}

struct Handler {
    writer: LogWriter,
    state: State,
    policies: PolicySet,
    /// Split: the cross-partition counts (huiqi_bus::reserve); None unsplit.
    counts: Option<async_nats::jetstream::kv::Store>,
}

/// How long a decision waits for a count another partition holds pending (that partition's
/// worker died between taking it and deciding): past it the worker stops with the error, and
/// the claim is decided again when it starts.
const COUNT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

impl Handler {
    async fn process(&mut self, d: &Delivery) -> Result<(Commit, Disposition), BusError> {
        let env = match Envelope::decode(&d.payload).and_then(huiqi_events::types::upcast) {
            Ok(env) => env,
            Err(e) => return Ok(self.park(d, &format!("unreadable event: {e}"))),
        };
        let inbox = env.id.clone();
        // A redelivery (the ack was lost after the commit) is a no-op, before it touches state.
        if self.writer.log().is_processed(&inbox).unwrap_or(false) {
            return Ok((Commit::default(), Disposition::Ack));
        }
        let done = |events| {
            (
                Commit {
                    inbox_id: Some(env.id.clone()),
                    events,
                },
                Disposition::Ack,
            )
        };
        match env.ty.as_str() {
            types::CHECK_RECORDED => {
                let Ok(r) = env.data_as::<CheckRecorded>() else {
                    return Ok(self.park(d, "check-recorded data does not match its schema"));
                };
                if self.state.is_decided(&r.claim_id) {
                    return Ok(done(vec![]));
                }
                let claim_id = r.claim_id.clone();
                self.state.on_check(&env.id, r);
                let mut events = vec![Pending::received(env.clone(), d.payload.clone())];
                // The last reply a waiting verified claim needed: decide it now.
                if let Some((cause, v)) = self.state.verified.get(&claim_id) {
                    if self.state.missing(v).is_none() {
                        let (cause, v) = (cause.clone(), v.clone());
                        events.extend(self.decide(&cause, &v).await?);
                    }
                }
                Ok(done(events))
            }
            types::CLAIM_VERIFIED => {
                let mut v = match env.data_as::<ClaimVerified>() {
                    Ok(v) => v,
                    Err(e) => return Ok(self.park(d, &format!("claim-verified data: {e}"))),
                };
                if self.state.is_decided(&v.claim_id) {
                    return Ok(done(vec![]));
                }
                self.state.take_embedded(&mut v);
                let mut events = vec![Pending::received(env.clone(), d.payload.clone())];
                match self.state.missing(&v) {
                    None => events.extend(self.decide(&env, &v).await?),
                    Some(why) => {
                        tracing::info!(claim_id = %v.claim_id, why = %why, "verified; waiting for a check reply before deciding");
                        self.state
                            .verified
                            .insert(v.claim_id.clone(), (env.clone(), v));
                    }
                }
                Ok(done(events))
            }
            other => {
                let reason = format!("unexpected event type `{other}` on {}", d.subject);
                Ok(self.park(d, &reason))
            }
        }
    }

    /// Decides a verified claim whose facts are complete: the decision's events, its effects
    /// folded into the state. An evaluation that fails (facts that do not fit their schema)
    /// leaves the claim waiting, loudly. Split, the decision's counts that cross partitions
    /// are taken first ([`Self::take_counts`]); an error there (the bucket unreachable, or a
    /// count pending elsewhere past [`COUNT_PATIENCE`]) stops the worker, and the claim is
    /// decided again from the log when it starts.
    async fn decide(
        &mut self,
        cause: &Envelope,
        v: &ClaimVerified,
    ) -> Result<Vec<Pending>, BusError> {
        // Kept to decide again on (evaluating takes the facts out of the state); only a split
        // worker, whose counts another partition may hold, ever decides a claim twice here.
        let facts = match self.counts {
            Some(_) => self.state.facts.get(&v.claim_id).cloned(),
            None => None,
        };
        let mut elsewhere: Vec<ForeignCount> = Vec::new();
        let evaluation = loop {
            let evaluation = match self.state.evaluate(&self.policies, None, v) {
                Ok(e) => e,
                Err(why) => {
                    tracing::error!(claim_id = %v.claim_id, why = %huiqi_events::mask_digit_runs(&why), "verified claim cannot be decided; it waits for an operator");
                    return Ok(vec![]);
                }
            };
            let lost = self.take_counts(&evaluation).await?;
            if lost.is_empty() {
                break evaluation;
            }
            // Some persons are already counted by claims in other partitions: they join the
            // history as theirs, and the claim is decided again on its facts.
            tracing::info!(claim_id = %v.claim_id, counted_elsewhere = lost.len(), "counts taken by other partitions' claims; deciding again");
            let found = CountedElsewhere {
                claim_id: v.claim_id.clone(),
                counts: lost,
            };
            self.state.on_counted_elsewhere(&found);
            elsewhere.extend(found.counts);
            if let Some(f) = &facts {
                self.state.facts.insert(v.claim_id.clone(), f.clone());
            }
        };
        let mut events = Vec::new();
        if !elsewhere.is_empty() {
            events.push(counted_elsewhere_event(
                cause,
                &CountedElsewhere {
                    claim_id: v.claim_id.clone(),
                    counts: elsewhere,
                },
            ));
        }
        self.state.verified.remove(&v.claim_id);
        events.extend(decision_events(cause, v, &evaluation));
        self.state.on_evaluation(&evaluation);
        let dec = &evaluation.decision;
        tracing::info!(
            claim_id = %dec.claim_id,
            correlation_id = %cause.correlationid.as_deref().unwrap_or(&cause.id),
            causation_id = %cause.id,
            measure = %dec.measure,
            status = ?dec.status,
            total = %dec.total,
            lines = dec.lines.len(),
            entitlements = evaluation.entitlements.len(),
            policy = %dec.policy_version,
            "award decided"
        );
        metrics::counter!(
            "huiqi_awards_decided_total",
            "measure" => dec.measure.clone(),
            "status" => if dec.status == AwardStatus::Approved { "approved" } else { "rejected" }
        )
        .increment(1);
        Ok(events)
    }

    /// Split: takes every count of `e` that crosses partitions, in sorted order, and returns
    /// the ones other claims' decisions count (having given back this claim's, which the next
    /// evaluation takes again as it needs them); none lost: all confirmed as this claim's.
    /// Confirmed before the decision is logged: a worker killed in between decides the claim
    /// again from the same history, which counts the same keys.
    async fn take_counts(&self, e: &Evaluation) -> Result<Vec<ForeignCount>, BusError> {
        use huiqi_bus::reserve::{self, HoldState, Holder, Reserved};
        let Some(kv) = &self.counts else {
            return Ok(Vec::new());
        };
        let d = &e.decision;
        let mut counts: Vec<huiqi_events::history::Count> = d
            .counts
            .iter()
            .cloned()
            .chain(e.entitlements.iter().map(Entitlement::count))
            .filter(|c| reserve::crosses_partitions(&c.key))
            .collect();
        counts.sort_by_cached_key(|c| reserve::key_name(&c.key));
        // One reservation per key, for everything the decision counts under it.
        counts.dedup_by(|later, first| {
            let same = later.key == first.key;
            if same {
                first.amount = first.amount + later.amount;
            }
            same
        });
        let holder = |c: &huiqi_events::history::Count| Holder {
            claim_id: d.claim_id.clone(),
            uscc: d.applicant_uscc.clone(),
            amount: c.amount,
            state: HoldState::Pending,
        };
        // Every key tried at once (one round trip, not one per person); then in sorted order,
        // each key another claim holds pending is waited for holding only the keys below it
        // (those above are given back first and taken again after): deadlock-free.
        let holders: Vec<Holder> = counts.iter().map(holder).collect();
        let tried = futures_util::future::join_all(
            counts
                .iter()
                .zip(&holders)
                .map(|(c, h)| reserve::try_reserve(kv, &c.key, h)),
        )
        .await;
        let mut found: Vec<Option<Reserved>> = Vec::with_capacity(counts.len());
        for t in tried {
            found.push(t?.ok());
        }
        for i in 0..counts.len() {
            if found[i].is_some() {
                continue;
            }
            for j in i + 1..counts.len() {
                if matches!(found[j], Some(Reserved::Ours { .. })) {
                    reserve::release(kv, &counts[j].key, &d.claim_id).await?;
                    found[j] = None;
                }
            }
            let c = &counts[i];
            found[i] = Some(reserve::reserve(kv, &c.key, &holder(c), COUNT_PATIENCE).await?);
        }
        let (mut ours, mut lost) = (Vec::new(), Vec::new());
        for (c, r) in counts.iter().zip(found) {
            match r.expect("every key resolved") {
                Reserved::Ours { state, revision } => ours.push((c, state, revision)),
                Reserved::Counted(h) => lost.push(ForeignCount {
                    claim_id: h.claim_id,
                    applicant_uscc: h.uscc,
                    count: huiqi_events::history::Count {
                        key: c.key.clone(),
                        amount: h.amount,
                    },
                }),
            }
        }
        if lost.is_empty() && ours.len() <= reserve::FINAL_LIST_MAX {
            // All its own: confirmed with one list (the common case: one write, not one per
            // count).
            let keys: Vec<&huiqi_events::history::Key> =
                ours.iter().map(|(c, _, _)| &c.key).collect();
            if !keys.is_empty() {
                reserve::finalize(kv, &d.claim_id, &keys).await?;
            }
        } else if lost.is_empty() {
            let pending: Vec<(&huiqi_events::history::Count, Holder, u64)> = ours
                .iter()
                .filter(|(_, s, _)| *s == HoldState::Pending)
                .map(|(c, _, rev)| (*c, holder(c), *rev))
                .collect();
            for r in futures_util::future::join_all(
                pending
                    .iter()
                    .map(|(c, h, rev)| reserve::confirm_at(kv, &c.key, h, *rev)),
            )
            .await
            {
                r?;
            }
        } else {
            for r in futures_util::future::join_all(
                ours.iter()
                    .map(|(c, _, _)| reserve::release(kv, &c.key, &d.claim_id)),
            )
            .await
            {
                r?;
            }
        }
        Ok(lost)
    }

    fn park(&self, d: &Delivery, reason: &str) -> (Commit, Disposition) {
        let reason = huiqi_events::mask_digit_runs(reason);
        tracing::error!(stream_seq = d.stream_sequence, reason = %reason, "message parked");
        (
            Commit {
                inbox_id: Some(d.stream_key()),
                events: vec![parked(SERVICE, d, &reason)],
            },
            Disposition::Term,
        )
    }
}

impl BatchHandler for Handler {
    async fn handle(&mut self, batch: Vec<Delivery>) -> Result<Handled, BusError> {
        let mut commits = Vec::with_capacity(batch.len());
        let mut dispositions = Vec::with_capacity(batch.len());
        for d in &batch {
            let (c, disp) = self.process(d).await?;
            commits.push(c);
            dispositions.push(disp);
        }
        Ok(Handled::new(commits, dispositions))
    }
}

/// One decision whose replay differs from the recorded one.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Difference {
    pub claim_id: String,
    pub recorded: serde_json::Value,
    pub replayed: serde_json::Value,
}

/// What [`replay`] found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReplayReport {
    pub events: u64,
    /// The logged bytes read (events as stored, before decompression).
    pub event_bytes: u64,
    pub decisions: u64,
    pub identical: u64,
    /// Entitlement events an identically re-derived decision gives that the log lacks (an
    /// answer published in part, in a log rebuilt and not started since).
    pub missing_entitlement_events: u64,
    pub differences: Vec<Difference>,
    pub approved_total: BTreeMap<String, huiqi_events::Money>,
    pub seconds: f64,
}

impl ReplayReport {
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.seconds.max(1e-9)
    }

    /// Adds another partition's replay (replayed side by side: the time is the caller's).
    pub fn merge(&mut self, other: ReplayReport) {
        self.events += other.events;
        self.event_bytes += other.event_bytes;
        self.decisions += other.decisions;
        self.identical += other.identical;
        self.missing_entitlement_events += other.missing_entitlement_events;
        self.differences.extend(other.differences);
        for (measure, total) in other.approved_total {
            let sum = self.approved_total.entry(measure).or_default();
            *sum = *sum + total;
        }
        self.seconds = self.seconds.max(other.seconds);
    }
}

/// Records handed from the reading thread to the folding one at a time.
const REPLAY_CHUNK: usize = 1024;
/// Chunks the reading thread may decode ahead of the folding one: enough to keep both busy;
/// each holds decoded payloads (a 40-person verified claim is ~20 KB of JSON), so more only
/// costs memory.
const REPLAY_CHUNKS_AHEAD: usize = 4;

/// Re-derives every decision in an award log under the policy version it names, with the
/// history folded up to that point, and compares it with the recorded one to the byte (or, for
/// a decision logged by a build that wrote its JSON keys in another order, as JSON).
///
/// One thread reads and decodes the log while this one folds and re-decides: on two cores
/// that is most of the gain there is. Each event is decoded once: a verified claim waits in
/// the state (as it does live) until its decision comes.
pub fn replay(log: &EventLog, policies: &PolicySet) -> Result<ReplayReport, AwardError> {
    replay_with_progress(log, policies, &|_| {})
}

/// [`replay`], telling `progress` how many events it has folded (once per chunk).
pub fn replay_with_progress(
    log: &EventLog,
    policies: &PolicySet,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ReplayReport, AwardError> {
    let started = std::time::Instant::now();
    let mut state = State::default();
    let mut check = rebuilt::AnswerCheck::default();
    let mut report = ReplayReport::default();
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<_>>(REPLAY_CHUNKS_AHEAD);
        scope.spawn(move || {
            let mut chunk = Vec::with_capacity(REPLAY_CHUNK);
            for rec in log.records_from(1) {
                chunk.push(rec.map(|r| {
                    let typed = Typed::decode(&r.envelope);
                    (r, typed)
                }));
                if chunk.len() == REPLAY_CHUNK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(REPLAY_CHUNK));
                    if tx.send(full).is_err() {
                        return;
                    }
                }
            }
            let _ = tx.send(chunk);
        });
        for chunk in rx {
            for rec in chunk {
                let (rec, typed) = rec?;
                replay_one(
                    &mut state,
                    &mut check,
                    policies,
                    &mut report,
                    rec.seq,
                    rec.envelope,
                    typed,
                )?;
            }
            progress(report.events);
        }
        Ok::<(), AwardError>(())
    })?;
    report.missing_entitlement_events = check.missing().len() as u64;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The payload of a logged verified claim or decision, decoded on the replay's reading thread
/// (the two largest payloads of the log: decoding them there takes a fifth of the folding
/// thread's work off it).
enum Typed {
    Verified(Result<ClaimVerified, String>),
    Decision(Result<AwardDecision, String>),
    Other,
}

impl Typed {
    fn decode(env: &Envelope) -> Typed {
        match env.ty.as_str() {
            types::CLAIM_VERIFIED => Typed::Verified(service::data(env)),
            types::AWARD_DECIDED => Typed::Decision(service::data(env)),
            _ => Typed::Other,
        }
    }
}

fn replay_one(
    state: &mut State,
    check: &mut rebuilt::AnswerCheck,
    policies: &PolicySet,
    report: &mut ReplayReport,
    seq: u64,
    env: Envelope,
    typed: Typed,
) -> Result<(), AwardError> {
    report.events += 1;
    report.event_bytes += env.data.get().len() as u64;
    let unreadable = |reason| AwardError::Unreadable { seq, reason };
    let recorded = match typed {
        Typed::Verified(v) => {
            state.on_verified(env, v.map_err(unreadable)?);
            return Ok(());
        }
        Typed::Decision(d) => d.map_err(unreadable)?,
        Typed::Other if rebuilt::is_entitlement(&env.ty) => {
            return check.entitlement(state, &env).map_err(unreadable);
        }
        Typed::Other => return state.apply(&env).map_err(unreadable),
    };
    report.decisions += 1;
    // Derived as the first start after a rebuild does: when identical, its entitlements
    // count from the decision on (the live path's order), whenever their events follow.
    let replayed = check.derive(state, policies, &recorded);
    state.verified.remove(&recorded.claim_id);
    let same = match &replayed {
        Ok(e) => {
            let bytes = serde_json::to_string(&e.decision).expect("serializes");
            bytes == env.data.get()
                || serde_json::from_str::<serde_json::Value>(&bytes).ok() == Some(env.data.value())
        }
        Err(_) => false,
    };
    if same {
        report.identical += 1;
    } else {
        report.differences.push(Difference {
            claim_id: recorded.claim_id.clone(),
            recorded: env.data.value(),
            replayed: match replayed {
                Ok(e) => serde_json::to_value(&e.decision).expect("serializes"),
                Err(why) => serde_json::json!({ "error": why }),
            },
        });
    }
    if recorded.status == AwardStatus::Approved {
        let t = report
            .approved_total
            .entry(recorded.measure.clone())
            .or_default();
        *t = *t + recorded.total;
    }
    // What applying the decision event does, without decoding it again.
    state.on_decision(&recorded);
    Ok(())
}
