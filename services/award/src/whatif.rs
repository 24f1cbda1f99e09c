//! What-if: every recorded claim decided again under another policy version, in the order the
//! log decided them, with a history of its own (the alternative decisions' counts, so caps and
//! one-per-person rules carry forward as they would have under that version). Nothing is
//! written: the report says, per measure, how many decisions and how much money would change,
//! and which claims.
//!
//! Supplement: the positive differences of a what-if turned into supplementary awards in the
//! award log — one `huiqi.award.supplemented.v1` and one payment order per claim, under the
//! claim's supplement award id, written once (the claim's inbox mark `supplement:<claim>`
//! refuses a second), published and signed by award when it starts again.

use crate::{AwardError, State, SERVICE};
use huiqi_eventlog::{Commit, EventLog, Pending};
use huiqi_events::payloads::{
    supplement_award_id, AwardDecision, AwardStatus, AwardSupplement, ClaimVerified, PaymentOrdered,
};
use huiqi_events::{subjects, types, Envelope, Money};
use huiqi_policy::{Evaluation, PolicySet};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// One claim whose decision would change.
#[derive(Debug, Clone, Serialize)]
pub struct Changed {
    pub claim_id: String,
    pub application_id: String,
    pub applicant_uscc: String,
    pub measure: String,
    pub recorded_version: String,
    pub recorded_status: AwardStatus,
    pub recorded_total: Money,
    pub whatif_status: AwardStatus,
    pub whatif_total: Money,
    /// What-if total minus recorded total: what a supplementary award would pay (negative:
    /// what was paid beyond the other version; never clawed back by this tool).
    pub delta: Money,
    /// The lines that differ, as `item: recorded → what-if (reason)`, persons masked.
    pub lines: Vec<String>,
}

/// Per measure: decisions seen, how many change, and the money.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MeasureDelta {
    pub decisions: u64,
    pub changed: u64,
    pub recorded_total: Money,
    pub whatif_total: Money,
    pub delta: Money,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct WhatIfReport {
    pub version: String,
    pub decisions: u64,
    pub by_measure: BTreeMap<String, MeasureDelta>,
    pub changed: Vec<Changed>,
}

fn approved_total(d: &AwardDecision) -> Money {
    if d.status == AwardStatus::Approved {
        d.total
    } else {
        Money::ZERO
    }
}

fn line_key(l: &huiqi_events::payloads::AwardLine) -> (String, Option<String>) {
    (l.item.clone(), l.person.clone())
}

/// The lines of `a` and `b` that differ in amount or paid, persons masked.
fn line_changes(a: &AwardDecision, b: &AwardDecision) -> Vec<String> {
    let before: BTreeMap<_, _> = a.lines.iter().map(|l| (line_key(l), l)).collect();
    let after: BTreeMap<_, _> = b.lines.iter().map(|l| (line_key(l), l)).collect();
    let mut keys: Vec<_> = before.keys().chain(after.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    let show = |l: Option<&&huiqi_events::payloads::AwardLine>| match l {
        Some(l) if l.paid => l.amount.to_string(),
        Some(_) => "unpaid".to_string(),
        None => "-".to_string(),
    };
    keys.into_iter()
        .filter(|k| {
            let (x, y) = (before.get(k), after.get(k));
            x.map(|l| (l.amount, l.paid)) != y.map(|l| (l.amount, l.paid))
        })
        .map(|k| {
            let reason = after
                .get(&k)
                .map(|l| huiqi_events::mask_digit_runs(&l.reason))
                .unwrap_or_default();
            format!(
                "{}{}: {} → {} ({})",
                k.0,
                k.1.as_deref()
                    .map(|p| format!(" {}", huiqi_events::mask(p)))
                    .unwrap_or_default(),
                show(before.get(&k)),
                show(after.get(&k)),
                reason.chars().take(120).collect::<String>()
            )
        })
        .collect()
}

/// One claim decided again: the recorded decision (and its event), the new evaluation and
/// the verified claim it was made from.
struct Redecision<'a> {
    decision_event: &'a Envelope,
    recorded: &'a AwardDecision,
    alt: &'a Evaluation,
    verified: &'a ClaimVerified,
}

/// Walks the award log deciding every claim again under `version` (see the module doc),
/// calling `each` per decision; returns the claims that already have a supplement.
fn redecide(
    log: &EventLog,
    policies: &PolicySet,
    version: &str,
    each: &mut dyn FnMut(Redecision<'_>),
) -> Result<BTreeSet<String>, AwardError> {
    policies.get(version)?;
    let mut state = State::default();
    let mut supplemented = BTreeSet::new();
    for rec in log.records_from(1) {
        let rec = rec?;
        let env = rec.envelope;
        let unreadable = |reason: String| AwardError::Unreadable {
            seq: rec.seq,
            reason,
        };
        match env.ty.as_str() {
            types::AWARD_DECIDED => {
                let recorded: AwardDecision =
                    env.data_as().map_err(|e| unreadable(e.to_string()))?;
                let Some((_, v)) = state.verified.remove(&recorded.claim_id) else {
                    return Err(unreadable("no verified claim precedes the decision".into()));
                };
                let alt = state
                    .evaluate(policies, Some(version), &v)
                    .map_err(unreadable)?;
                state.on_evaluation(&alt);
                each(Redecision {
                    decision_event: &env,
                    recorded: &recorded,
                    alt: &alt,
                    verified: &v,
                });
            }
            // The alternative decisions' own entitlements and counts are already in its
            // history; a supplement written earlier describes the recorded history only.
            types::ENTITLEMENT_DATA_PACKAGE | types::ENTITLEMENT_RESIDENT_POINTS => {}
            types::AWARD_SUPPLEMENTED => {
                if let Some(c) = env.data.value()["claim_id"].as_str() {
                    supplemented.insert(c.to_string());
                }
            }
            _ => state.apply(&env).map_err(unreadable)?,
        }
    }
    Ok(supplemented)
}

/// Decides every claim of the award log again under `version`.
pub fn whatif(
    log: &EventLog,
    policies: &PolicySet,
    version: &str,
) -> Result<WhatIfReport, AwardError> {
    let mut report = WhatIfReport {
        version: version.to_string(),
        ..Default::default()
    };
    redecide(log, policies, version, &mut |r| {
        let (recorded, d) = (r.recorded, &r.alt.decision);
        report.decisions += 1;
        let m = report
            .by_measure
            .entry(recorded.measure.clone())
            .or_default();
        m.decisions += 1;
        let (before, after) = (approved_total(recorded), approved_total(d));
        m.recorded_total = m.recorded_total + before;
        m.whatif_total = m.whatif_total + after;
        let lines = line_changes(recorded, d);
        if before != after || recorded.status != d.status || !lines.is_empty() {
            m.changed += 1;
            m.delta = m.delta + Money(after.0 - before.0);
            report.changed.push(Changed {
                claim_id: recorded.claim_id.clone(),
                application_id: recorded.application_id.clone(),
                applicant_uscc: recorded.applicant_uscc.clone(),
                measure: recorded.measure.clone(),
                recorded_version: recorded.policy_version.clone(),
                recorded_status: recorded.status,
                recorded_total: before,
                whatif_status: d.status,
                whatif_total: after,
                delta: Money(after.0 - before.0),
                lines,
            });
        }
    })?;
    Ok(report)
}

/// One supplementary award of a plan.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub claim_id: String,
    pub application_id: String,
    pub measure: String,
    pub award_id: String,
    pub recorded_total: Money,
    pub total: Money,
    pub amount: Money,
    #[serde(skip)]
    commit: Option<Commit>,
}

/// What `supplement` found and did.
#[derive(Debug, Clone, Serialize)]
pub struct SupplementOutcome {
    pub version: String,
    pub plan: Vec<Planned>,
    /// Claims whose decision would change but get no supplement, and why.
    pub not_supplemented: Vec<(String, String)>,
    /// The plan's digest: `--confirm` must repeat it, so what is written is what was shown.
    pub digest: String,
    /// Supplements written to the log (0 until confirmed).
    pub written: usize,
}

/// Plans supplementary awards for every claim `version` would pay more; with `confirm` equal
/// to the plan's digest, writes them to the award log (the award service must be stopped; it
/// publishes them, signed, when it starts). A claim gets at most one supplement, ever; a
/// lower amount under `version` is reported, never clawed back.
pub fn supplement(
    log: &EventLog,
    policies: &PolicySet,
    version: &str,
    confirm: Option<&str>,
) -> Result<SupplementOutcome, AwardError> {
    let mut plan = Vec::new();
    let mut not = Vec::new();
    let supplemented = redecide(log, policies, version, &mut |r| {
        let (recorded, d) = (r.recorded, &r.alt.decision);
        let (before, after) = (approved_total(recorded), approved_total(d));
        if after <= before {
            if after < before {
                not.push((
                    recorded.claim_id.clone(),
                    format!(
                        "{version} pays {after}, less than the {before} paid: never clawed back"
                    ),
                ));
            }
            return;
        }
        let award_id = supplement_award_id(&recorded.claim_id, version);
        let amount = Money(after.0 - before.0);
        let data = AwardSupplement {
            claim_id: recorded.claim_id.clone(),
            application_id: recorded.application_id.clone(),
            measure: recorded.measure.clone(),
            applicant_uscc: recorded.applicant_uscc.clone(),
            award_id: award_id.clone(),
            policy_version: d.policy_version.clone(),
            policy_hash: d.policy_hash.clone(),
            replaces_version: recorded.policy_version.clone(),
            replaces_total: before,
            total: after,
            amount,
            lines: d.lines.clone(),
            rules: d.rules.clone(),
            facts_digest: d.facts_digest.clone(),
            counts: d.counts.clone(),
            replaces_counts: recorded.counts.clone(),
        };
        let cause = format!("supplement:{}", recorded.claim_id);
        let env = Envelope::derived(
            SERVICE,
            types::AWARD_SUPPLEMENTED,
            &recorded.claim_id,
            &data,
            &cause,
            version,
        )
        .expect("serializes")
        .caused_by(r.decision_event);
        let applicant = &r.verified.application.applicant;
        let order = PaymentOrdered {
            award_id: award_id.clone(),
            claim_id: recorded.claim_id.clone(),
            application_id: recorded.application_id.clone(),
            measure: recorded.measure.clone(),
            payee_uscc: applicant.uscc.clone(),
            bank_account: applicant.bank_account.clone(),
            amount,
        };
        let order_env = Envelope::derived(
            SERVICE,
            types::PAYMENT_ORDERED,
            &recorded.claim_id,
            &order,
            &env.id,
            "0",
        )
        .expect("serializes")
        .caused_by(&env);
        plan.push(Planned {
            claim_id: recorded.claim_id.clone(),
            application_id: recorded.application_id.clone(),
            measure: recorded.measure.clone(),
            award_id,
            recorded_total: before,
            total: after,
            amount,
            commit: Some(Commit {
                inbox_id: Some(cause),
                events: vec![
                    Pending::publish(
                        env,
                        format!(
                            "{}.{}",
                            subjects::AWARDS_SUPPLEMENTED_PREFIX,
                            recorded.measure
                        ),
                    ),
                    Pending::publish(order_env, subjects::PAYMENT_ORDERED),
                ],
            }),
        });
    })?;
    plan.retain(|p| {
        let again = supplemented.contains(&p.claim_id);
        if again {
            not.push((
                p.claim_id.clone(),
                "already has a supplementary award: a claim gets at most one".into(),
            ));
        }
        !again
    });
    let digest = {
        use sha2::{Digest, Sha256};
        let listed: Vec<(&str, String, &str)> = plan
            .iter()
            .map(|p| {
                (
                    p.claim_id.as_str(),
                    p.amount.to_string(),
                    p.award_id.as_str(),
                )
            })
            .collect();
        let bytes = serde_json::to_vec(&(version, listed)).expect("serializes");
        Sha256::digest(&bytes)
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let mut written = 0;
    if let Some(c) = confirm {
        if c != digest {
            return Err(AwardError::Refused(format!(
                "--confirm {c} is not this plan's digest {digest}: nothing written (the plan changed since it was shown, or the digest is mistyped); review it again"
            )));
        }
        let commits: Vec<Commit> = plan.iter_mut().filter_map(|p| p.commit.take()).collect();
        for applied in log.commit(&commits)? {
            if !matches!(applied, huiqi_eventlog::Applied::Duplicate) {
                written += 1;
            }
        }
    }
    Ok(SupplementOutcome {
        version: version.to_string(),
        plan,
        not_supplemented: not,
        digest,
        written,
    })
}
