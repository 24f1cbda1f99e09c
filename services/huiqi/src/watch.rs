//! Submitting applications and watching what becomes of them, as a portal or bureau would:
//! publish CloudEvents with `Nats-Msg-Id`, subscribe to the public outcome subjects.

use crate::HuiqiError;
use async_nats::jetstream;
use futures_util::StreamExt;
use huiqi_events::payloads::{
    AwardDecision, AwardStatus, IntakeAccepted, IntakeRejected, PayoutFailed, PayoutSettled,
};
use huiqi_events::{subjects, Envelope};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Publishes events with `Nats-Msg-Id` = event id, up to `in_flight` acks outstanding.
pub async fn publish_all(
    js: &jetstream::Context,
    events: &[Envelope],
    in_flight: usize,
) -> Result<(), HuiqiError> {
    publish_all_to(js, subjects::APPLICATIONS_SUBMITTED, events, in_flight).await
}

/// [`publish_all`] on another subject (a named portal's `huiqi.applications.submitted.<p>`).
pub async fn publish_all_to(
    js: &jetstream::Context,
    subject: &str,
    events: &[Envelope],
    in_flight: usize,
) -> Result<(), HuiqiError> {
    let publish = |i: usize| {
        let e = &events[i];
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", e.id.as_str());
        let subject = subject.to_string();
        let payload = e.encode();
        async move {
            let ack = js
                .publish_with_headers(subject, h, payload.into())
                .await
                .map_err(|err| err.to_string())?;
            ack.await.map(|_| ()).map_err(|err| err.to_string())
        }
    };
    // Many acks in flight. Messages whose publish fails (a cluster electing a new stream
    // leader answers "no responders" for some seconds) are sent again together, under their
    // same Nats-Msg-Id so the stream keeps each once, until a whole RETRY_FOR passes in which
    // none of them is acked.
    const RETRY_FOR: Duration = Duration::from_secs(60);
    let mut todo: Vec<usize> = (0..events.len()).collect();
    let mut progress = Instant::now();
    let mut backoff = Duration::from_millis(200);
    loop {
        let mut failed: Vec<(usize, String)> = Vec::new();
        let mut pending = futures_util::stream::FuturesUnordered::new();
        for &i in &todo {
            let p = publish(i);
            pending.push(async move { (i, p.await) });
            while pending.len() >= in_flight {
                if let Some((i, Err(e))) = pending.next().await {
                    failed.push((i, e));
                }
            }
        }
        while let Some((i, r)) = pending.next().await {
            if let Err(e) = r {
                failed.push((i, e));
            }
        }
        if failed.len() < todo.len() {
            progress = Instant::now();
            backoff = Duration::from_millis(200);
        }
        let Some((first, why)) = failed.first() else {
            return Ok(());
        };
        if progress.elapsed() > RETRY_FOR {
            return Err(HuiqiError::Nats(format!(
                "event {} not acked by JetStream ({} not acked in {RETRY_FOR:?}): {why}",
                events[*first].id,
                failed.len()
            )));
        }
        tracing::warn!(count = failed.len(), error = %why, "publishes not acked; sending them again under the same ids");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
        todo = failed.into_iter().map(|(i, _)| i).collect();
        todo.sort_unstable();
    }
}

/// Publishes raw bytes as a portal would (for malformed-input drills).
pub async fn publish_raw(
    js: &jetstream::Context,
    msg_id: &str,
    bytes: Vec<u8>,
) -> Result<(), HuiqiError> {
    publish_raw_to(js, subjects::APPLICATIONS_SUBMITTED, msg_id, bytes).await
}

/// [`publish_raw`] on another subject.
pub async fn publish_raw_to(
    js: &jetstream::Context,
    subject: &str,
    msg_id: &str,
    bytes: Vec<u8>,
) -> Result<(), HuiqiError> {
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", msg_id);
    js.publish_with_headers(subject.to_string(), h, bytes.into())
        .await
        .map_err(|e| HuiqiError::Nats(e.to_string()))?
        .await
        .map_err(|e| HuiqiError::Nats(e.to_string()))?;
    Ok(())
}

/// Everything seen about one application.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub application_id: String,
    pub accepted: Vec<IntakeAccepted>,
    pub rejected: Vec<IntakeRejected>,
    pub decisions: Vec<AwardDecision>,
    pub settled: Vec<PayoutSettled>,
    pub failed: Vec<PayoutFailed>,
    pub entitlements: usize,
    pub first_seen: Option<Instant>,
    pub finished_at: Option<Instant>,
}

impl Outcome {
    pub fn claim_id(&self) -> Option<&str> {
        self.accepted.first().map(|a| a.claim_id.as_str())
    }

    /// Rejected at intake, decided as rejected, or approved and paid (or refused).
    pub fn is_final(&self) -> bool {
        if !self.rejected.is_empty() && self.accepted.is_empty() {
            return true;
        }
        match self.decisions.first() {
            Some(d) if d.status == AwardStatus::Rejected => true,
            Some(_) => !self.settled.is_empty() || !self.failed.is_empty(),
            None => false,
        }
    }
}

/// Subscribes to intake replies, awards, payouts and entitlements (core NATS, so it sees what
/// is published from now on) and folds them per application.
pub struct Watcher {
    subs: futures_util::stream::SelectAll<async_nats::Subscriber>,
    pub by_application: BTreeMap<String, Outcome>,
    claim_to_app: HashMap<String, String>,
    /// Events of claims whose acceptance has not been seen yet: the subscriptions are separate,
    /// so nothing orders a claim's settlement after its acceptance on this side.
    early: HashMap<String, Vec<(String, Envelope)>>,
    /// Events that could not be tied to an application (e.g. a malformed submission's reply).
    pub orphans: Vec<Envelope>,
    pub include_awards: bool,
    finished: usize,
}

impl Watcher {
    pub async fn start(
        client: &async_nats::Client,
        include_awards: bool,
    ) -> Result<Watcher, HuiqiError> {
        let mut subs = futures_util::stream::SelectAll::new();
        let mut names = vec![
            "huiqi.intake.>",
            "huiqi.payouts.>",
            "huiqi.entitlements.>",
            "huiqi.awards.rejected.>",
        ];
        if include_awards {
            names.push("huiqi.awards.approved.>");
        }
        for s in names {
            subs.push(
                client
                    .subscribe(s)
                    .await
                    .map_err(|e| HuiqiError::Nats(e.to_string()))?,
            );
        }
        client
            .flush()
            .await
            .map_err(|e| HuiqiError::Nats(e.to_string()))?;
        Ok(Watcher {
            subs,
            by_application: BTreeMap::new(),
            claim_to_app: HashMap::new(),
            early: HashMap::new(),
            orphans: Vec::new(),
            include_awards,
            finished: 0,
        })
    }

    /// How many applications have reached their final outcome (kept as a count: checking it
    /// after every message must not scan every application).
    pub fn finished(&self) -> usize {
        self.finished
    }

    /// Folds messages until `done` holds or `timeout` passes; returns whether `done` held.
    pub async fn until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&Watcher) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(self) {
            let msg = tokio::select! {
                m = self.subs.next() => m,
                _ = tokio::time::sleep_until(deadline) => return done(self),
            };
            let Some(msg) = msg else { return done(self) };
            let Ok(env) = Envelope::decode(&msg.payload) else {
                continue;
            };
            self.fold(msg.subject.as_str(), env);
        }
        true
    }

    fn fold(&mut self, subject: &str, env: Envelope) {
        let now = Instant::now();
        let data = env.data.value();
        let app_id = if subject == subjects::INTAKE_ACCEPTED || subject == subjects::INTAKE_REJECTED
        {
            data["application_id"].as_str().unwrap_or("").to_string()
        } else {
            let claim = data["claim_id"].as_str().unwrap_or("");
            match self.claim_to_app.get(claim) {
                Some(a) => a.clone(),
                None => data["application_id"].as_str().unwrap_or("").to_string(),
            }
        };
        if app_id.is_empty() {
            self.orphans.push(env);
            return;
        }
        let o = self
            .by_application
            .entry(app_id.clone())
            .or_insert_with(|| Outcome {
                application_id: app_id.clone(),
                ..Default::default()
            });
        o.first_seen.get_or_insert(now);
        if subject == subjects::INTAKE_ACCEPTED {
            if let Ok(a) = env.data_as::<IntakeAccepted>() {
                self.claim_to_app.insert(a.claim_id.clone(), app_id);
                let early = self.early.remove(&a.claim_id).unwrap_or_default();
                o.accepted.push(a);
                for (subject, env) in early {
                    self.fold(&subject, env);
                }
                return;
            }
        } else if subject == subjects::INTAKE_REJECTED {
            if let Ok(r) = env.data_as::<IntakeRejected>() {
                o.rejected.push(r);
            }
        } else if subject.starts_with("huiqi.awards.") {
            if let Ok(d) = env.data_as::<AwardDecision>() {
                o.decisions.push(d);
            }
        } else if subject == subjects::PAYOUTS_SETTLED {
            if let Ok(s) = env.data_as::<PayoutSettled>() {
                o.settled.push(s);
            }
        } else if subject == subjects::PAYOUTS_FAILED {
            if let Ok(f) = env.data_as::<PayoutFailed>() {
                o.failed.push(f);
            }
        } else if subject.starts_with("huiqi.entitlements.") {
            o.entitlements += env.data.value()["grants"]
                .as_array()
                .map(Vec::len)
                .unwrap_or(1);
        }
        if o.finished_at.is_none()
            && (o.is_final() || (!self.include_awards && !o.settled.is_empty()))
        {
            o.finished_at = Some(now);
        }
    }
}
