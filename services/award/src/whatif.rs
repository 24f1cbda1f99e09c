//! What-if: every recorded claim decided again under another policy version, in the order the
//! log decided them, with a history of its own (the alternative decisions' counts, so caps and
//! one-per-person rules carry forward as they would have under that version). Nothing is
//! written: the report says, per measure, how many decisions and how much money would change,
//! and which claims.

use crate::{AwardError, State};
use huiqi_eventlog::EventLog;
use huiqi_events::payloads::{AwardDecision, AwardStatus};
use huiqi_events::{types, Money};
use huiqi_policy::PolicySet;
use serde::Serialize;
use std::collections::BTreeMap;

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

/// Decides every claim of the award log again under `version`.
pub fn whatif(
    log: &EventLog,
    policies: &PolicySet,
    version: &str,
) -> Result<WhatIfReport, AwardError> {
    policies.get(version)?;
    let mut state = State::default();
    let mut report = WhatIfReport {
        version: version.to_string(),
        ..Default::default()
    };
    for rec in log.records_from(1) {
        let rec = rec?;
        let env = rec.envelope;
        match env.ty.as_str() {
            types::AWARD_DECIDED => {
                let recorded: AwardDecision =
                    env.data_as().map_err(|e| AwardError::Unreadable {
                        seq: rec.seq,
                        reason: e.to_string(),
                    })?;
                let Some((_, v)) = state.verified.remove(&recorded.claim_id) else {
                    return Err(AwardError::Unreadable {
                        seq: rec.seq,
                        reason: "no verified claim precedes the decision".into(),
                    });
                };
                let alt = state
                    .evaluate(policies, Some(version), &v)
                    .map_err(|reason| AwardError::Unreadable {
                        seq: rec.seq,
                        reason,
                    })?;
                state.on_evaluation(&alt);
                let d = &alt.decision;
                report.decisions += 1;
                let m = report
                    .by_measure
                    .entry(recorded.measure.clone())
                    .or_default();
                m.decisions += 1;
                let (before, after) = (approved_total(&recorded), approved_total(d));
                m.recorded_total = m.recorded_total + before;
                m.whatif_total = m.whatif_total + after;
                let lines = line_changes(&recorded, d);
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
            }
            // The what-if decisions' own entitlements are already in its history.
            types::ENTITLEMENT_DATA_PACKAGE | types::ENTITLEMENT_RESIDENT_POINTS => {}
            _ => state.apply(&env).map_err(|reason| AwardError::Unreadable {
                seq: rec.seq,
                reason,
            })?,
        }
    }
    Ok(report)
}
