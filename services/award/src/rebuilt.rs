//! The first start of a log rebuilt from the stream: award's answers checked, what is missing
//! derived again.
//!
//! Why: award answers a verified claim with several events of one commit — the decision, the
//! payment order, the M4/M5 entitlement events — and the relay publishes them one after
//! another. An instance killed part-way (or whose publish was refused in a cluster election
//! and never resent) leaves the decision on the stream without the rest. The rebuilt log then
//! holds the decision, so the claim counts as decided and is never answered again: the
//! missing payment order is found from the decision alone ([`State::missing_orders`], every
//! start), but the entitlements cannot be — the slim decision does not list them, and which
//! numbers and persons get one depends on every grant before it (once per number, once per
//! person). So, once after a rebuild, every decision is derived again at its place in the log,
//! with the history folded up to there, as [`crate::replay`] does; the entitlement events it
//! gives that the log lacks are committed (same derived ids, so a copy that did reach the
//! stream is dropped by JetStream's de-duplication and readers de-duplicate by id), and their
//! grants count in the history from their decision on, as they did when it was made.

use crate::{entitlement_events, service, State};
use huiqi_eventlog::Pending;
use huiqi_events::payloads::{AwardDecision, DataPackageEntitlement, ResidentPointsEntitlement};
use huiqi_events::{types, Envelope};
use huiqi_policy::{Entitlement, Evaluation, PolicySet};
use std::collections::{HashMap, HashSet};

/// The check, fed every record of the fold in place of [`State::apply`].
#[derive(Default)]
pub struct AnswerCheck {
    /// Entitlement events the re-derived decisions give, by id (with the order they were
    /// derived in), not (yet) seen in the log.
    expected: HashMap<String, (usize, Pending)>,
    derived: usize,
    /// Claims whose grants were counted from their re-derived decision: their logged
    /// entitlement events must not count them again.
    counted: HashSet<String>,
    /// What the logged entitlement events grant, by claim ("phone:…", "person:…"): a derived
    /// event absent by id whose grants were logged under another id (a log from before the
    /// batched v2 events) is not missing.
    logged: HashMap<String, HashSet<String>>,
    /// Decisions checked, and those that could not be derived again identically.
    pub decisions: u64,
    pub differing: Vec<String>,
}

/// The claim an entitlement event is for and what it grants.
fn grants_of(env: &Envelope) -> Result<(String, Vec<String>), String> {
    if env.ty == types::ENTITLEMENT_DATA_PACKAGE {
        let e: DataPackageEntitlement = service::data(env)?;
        let keys = e.grants.iter().map(|g| format!("phone:{}", g.phone));
        Ok((e.claim_id.clone(), keys.collect()))
    } else {
        let e: ResidentPointsEntitlement = service::data(env)?;
        let keys = e.grants.iter().map(|g| format!("person:{}", g.id_number));
        Ok((e.claim_id.clone(), keys.collect()))
    }
}

pub fn is_entitlement(ty: &str) -> bool {
    ty == types::ENTITLEMENT_DATA_PACKAGE || ty == types::ENTITLEMENT_RESIDENT_POINTS
}

impl AnswerCheck {
    /// One record of the fold, in place of [`State::apply`].
    pub fn apply(
        &mut self,
        state: &mut State,
        policies: &PolicySet,
        env: &Envelope,
    ) -> Result<(), String> {
        match env.ty.as_str() {
            types::AWARD_DECIDED => {
                let d: AwardDecision = service::data(env)?;
                match self.derive(state, policies, &d) {
                    Ok(e) if e.decision == d => {}
                    // Not derivable identically (another policy file, facts missing): its
                    // logged entitlements count as they come, nothing is derived for it.
                    Ok(_) => self.differing.push(d.claim_id.clone()),
                    Err(why) => {
                        self.differing.push(d.claim_id.clone());
                        tracing::warn!(claim_id = %d.claim_id, why = %huiqi_events::mask_digit_runs(&why), "a decision of the rebuilt log cannot be derived again; its entitlements are taken as logged");
                    }
                }
                state.apply(env)
            }
            ty if is_entitlement(ty) => self.entitlement(state, env),
            _ => state.apply(env),
        }
    }

    /// Derives the logged decision `d` again with the state folded up to it (before the
    /// decision is applied). When the result is `d` itself, its entitlement events are
    /// expected in the log from here on, and its grants count in the history now — as they did
    /// when it was made — not when (or whether) their events follow.
    pub fn derive(
        &mut self,
        state: &mut State,
        policies: &PolicySet,
        d: &AwardDecision,
    ) -> Result<Evaluation, String> {
        self.decisions += 1;
        // Taken out for the evaluation and put back (applying the decision removes it next),
        // not copied: it holds the whole verified event.
        let (cause, v) = state
            .verified
            .remove(&d.claim_id)
            .ok_or_else(|| "no verified claim precedes the decision".to_string())?;
        let e = state.evaluate(policies, Some(&d.policy_version), &v);
        if let Ok(e) = &e {
            if e.decision == *d {
                for p in entitlement_events(&cause, e) {
                    self.derived += 1;
                    self.expected
                        .insert(p.envelope.id.clone(), (self.derived, p));
                }
                let grants: Vec<_> = e.entitlements.iter().map(Entitlement::count).collect();
                state.history.add(&d.claim_id, &d.applicant_uscc, &grants);
                self.counted.insert(d.claim_id.clone());
            }
        }
        state.verified.insert(d.claim_id.clone(), (cause, v));
        e
    }

    /// A logged entitlement event: expected (no longer missing); its grants count unless its
    /// decision's derivation counted them already.
    pub fn entitlement(&mut self, state: &mut State, env: &Envelope) -> Result<(), String> {
        if self.expected.remove(&env.id).is_some() {
            // The very event an identical re-derivation gives (the id is a function of the
            // decision, the type and the chunk): its grants were counted at the decision, and
            // no other derived event grants any of them (each grant is in one chunk), so
            // `missing` never looks for them — nothing to parse or keep. The common case: a
            // replay of a whole log keeps nothing per claim here.
            return Ok(());
        }
        let (claim, keys) = grants_of(env)?;
        self.logged.entry(claim.clone()).or_default().extend(keys);
        if self.counted.contains(&claim) {
            Ok(())
        } else {
            state.apply(env)
        }
    }

    /// The entitlement events the log lacks, in log order of their decisions: derived events
    /// absent by id none of whose grants the log holds under another id. One whose grants the
    /// log holds in part is left to the operator (publishing it would grant some twice).
    pub fn missing(&self) -> Vec<Pending> {
        let mut out: Vec<&(usize, Pending)> = self.expected.values().collect();
        out.sort_by_key(|(n, _)| *n);
        let none = HashSet::new();
        out.into_iter()
            .map(|(_, p)| p.clone())
            .filter(|p| {
                let Ok((claim, keys)) = grants_of(&p.envelope) else {
                    return false;
                };
                let logged = self.logged.get(&claim).unwrap_or(&none);
                let held = keys.iter().filter(|k| logged.contains(*k)).count();
                if held > 0 && held < keys.len() {
                    tracing::error!(claim_id = %claim, event_id = %p.envelope.id, granted = held, of = keys.len(), "an entitlement event missing after its decision whose grants the log holds in part under other events: not derived again; it waits for an operator");
                }
                held == 0
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use huiqi_events::payloads::DataPackageGrant;

    fn package(id_index: &str, claim: &str, phones: &[&str]) -> Envelope {
        let data = DataPackageEntitlement {
            claim_id: claim.into(),
            award_id: crate::award_id_for(claim),
            grants: phones
                .iter()
                .map(|p| DataPackageGrant {
                    phone: p.to_string(),
                    carrier: "mobile".into(),
                    gigabytes: 10,
                })
                .collect(),
        };
        Envelope::derived(
            crate::SERVICE,
            types::ENTITLEMENT_DATA_PACKAGE,
            claim,
            &data,
            "verified-1",
            id_index,
        )
        .unwrap()
    }

    /// The expected event itself is only struck off (its grants counted at the decision); an
    /// event under another id is read: kept for `missing`, and counted only for a claim whose
    /// decision did not count its grants.
    #[test]
    fn only_an_unexpected_entitlement_event_is_read_and_kept() {
        let mut state = State::default();
        let mut check = AnswerCheck::default();
        let expected = package("mobile:0", "C-1", &["13800000001"]);
        let missing = package("mobile:1", "C-1", &["13800000002"]);
        for p in [&expected, &missing] {
            check.derived += 1;
            let pending = Pending::publish(p.clone(), "entitlements");
            check
                .expected
                .insert(p.id.clone(), (check.derived, pending));
        }
        check.counted.insert("C-1".into());

        check.entitlement(&mut state, &expected).unwrap();
        assert!(check.logged.is_empty(), "the expected event is not kept");
        assert_eq!(check.expected.len(), 1);
        assert_eq!(state.history.len(), 0, "counted at the decision, not again");

        // The other derived event is absent by id; an old-form event holds its grant.
        let old_form = package("v1-0", "C-1", &["13800000002"]);
        check.entitlement(&mut state, &old_form).unwrap();
        assert_eq!(check.logged["C-1"].len(), 1);
        assert_eq!(state.history.len(), 0, "the claim's grants were counted");
        assert!(
            check.missing().is_empty(),
            "its grant is logged: not missing"
        );

        // A claim whose decision could not be derived: its logged events count as they come.
        let other = package("mobile:0", "C-2", &["13800000003"]);
        check.entitlement(&mut state, &other).unwrap();
        assert_eq!(state.history.len(), 1);
    }

    /// A derived event whose grants the log holds under no id is what `missing` returns.
    #[test]
    fn a_derived_event_absent_by_id_and_by_grant_is_missing() {
        let mut check = AnswerCheck::default();
        let absent = package("mobile:0", "C-1", &["13800000001"]);
        check.derived += 1;
        check.expected.insert(
            absent.id.clone(),
            (1, Pending::publish(absent.clone(), "entitlements")),
        );
        let found = check.missing();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].envelope.id, absent.id);
    }
}
