//! One module per claimable measure, and the steps every decision shares: policy period
//! (附则3), eligible applicant (附则1), then the measure's own rule, then take-the-highest
//! (附则2) and rounding.

pub mod m1;
pub mod m10;
pub mod m18;
pub mod m19;
pub mod m21;
pub mod m4;
pub mod m5;
pub mod m9;

use crate::{rules, terms, Entitlement, Evaluation, History, Policy};
use huiqi_events::payloads::{Application, AwardDecision, AwardLine, AwardStatus, Facts};
use huiqi_events::Money;
use std::collections::{BTreeMap, BTreeSet};

/// The measures an application may claim (CONTRACT.md).
pub const CLAIMABLE: &[&str] = &["M1", "M9", "M10", "M18", "M19", "M21"];

/// Collects a decision's lines; [`Builder::finish`] rounds, totals and sets the status.
pub struct Builder<'a> {
    pub policy: &'a Policy,
    pub app: &'a Application,
    pub facts: &'a Facts,
    pub history: &'a History,
    claim_id: String,
    lines: Vec<AwardLine>,
    rules: BTreeSet<&'static str>,
    pub entitlements: Vec<Entitlement>,
}

impl<'a> Builder<'a> {
    fn new(
        policy: &'a Policy,
        claim_id: &str,
        app: &'a Application,
        facts: &'a Facts,
        history: &'a History,
    ) -> Self {
        Builder {
            policy,
            app,
            facts,
            history,
            claim_id: claim_id.to_string(),
            lines: Vec::new(),
            rules: BTreeSet::new(),
            entitlements: Vec::new(),
        }
    }

    pub fn params(&self) -> &'a crate::Params {
        &self.policy.params
    }

    /// A paid line (the amount is rounded half-up to the fen here, once).
    pub fn pay(
        &mut self,
        item: &str,
        person: Option<&str>,
        amount: Money,
        reason: String,
        rule: &'static str,
    ) {
        self.push(item, person, amount.round(), true, reason, rule);
    }

    /// A line not paid, with the reason an operator can act on.
    pub fn deny(&mut self, item: &str, person: Option<&str>, reason: String, rule: &'static str) {
        self.push(item, person, Money::ZERO.round(), false, reason, rule);
    }

    fn push(
        &mut self,
        item: &str,
        person: Option<&str>,
        amount: Money,
        paid: bool,
        reason: String,
        rule: &'static str,
    ) {
        self.rules.insert(rule);
        self.lines.push(AwardLine {
            item: item.to_string(),
            person: person.map(str::to_string),
            amount,
            paid,
            reason,
            rule: rule.to_string(),
        });
    }

    /// Turns every paid line into a denied one (a threshold or one-off rule failed).
    pub fn deny_all(&mut self, why: &str, rule: &'static str) {
        self.rules.insert(rule);
        for l in self.lines.iter_mut().filter(|l| l.paid) {
            l.paid = false;
            l.amount = Money::ZERO.round();
            l.reason = format!("{} — but {why}", l.reason);
        }
    }

    pub fn lines(&self) -> &[AwardLine] {
        &self.lines
    }

    pub fn lines_mut(&mut self) -> &mut [AwardLine] {
        &mut self.lines
    }

    /// Applies 附则2 to every paid line: a person's prior payments reduce that person's line,
    /// enterprise-level ones (person null) reduce the remaining lines in order.
    pub fn apply_prior_payments(&mut self) {
        let facts = self.facts;
        let mut touched = false;
        for l in self
            .lines
            .iter_mut()
            .filter(|l| l.paid && l.person.is_some())
        {
            let (rest, why) = terms::take_highest(l.amount, facts, l.person.as_deref());
            if let Some(why) = why {
                touched = true;
                l.reason = format!("{}; {why}", l.reason);
                l.amount = rest.round();
                if rest.is_zero() {
                    l.paid = false;
                }
            }
        }
        let (mut left, named) = terms::prior_paid(facts, None);
        if !left.is_zero() {
            touched = true;
            let note = format!(
                "reduced by enterprise-level payments of other policies: {} (不重复享受、就高原则, 附则2)",
                named.join("; ")
            );
            for l in self.lines.iter_mut().filter(|l| l.paid) {
                if left.is_zero() {
                    break;
                }
                let cut = if left >= l.amount { l.amount } else { left };
                left = left - cut;
                l.amount = (l.amount - cut).round();
                l.reason = format!("{}; {note}", l.reason);
                if l.amount.is_zero() {
                    l.paid = false;
                }
            }
        }
        if touched {
            self.rules.insert("SR2");
        }
    }

    fn finish(mut self) -> Evaluation {
        let total: Money = self.lines.iter().filter(|l| l.paid).map(|l| l.amount).sum();
        let status = if total > Money::ZERO {
            AwardStatus::Approved
        } else {
            for l in self.lines.iter_mut() {
                l.paid = false;
            }
            AwardStatus::Rejected
        };
        if self.lines.is_empty() {
            self.deny(
                "claim",
                None,
                "the application lists nothing this measure pays for".into(),
                "SR1",
            );
        }
        let rules: BTreeMap<String, String> = self
            .rules
            .iter()
            .map(|c| (c.to_string(), rules::text(c).unwrap_or("").to_string()))
            .collect();
        self.entitlements.sort();
        Evaluation {
            decision: AwardDecision {
                claim_id: self.claim_id,
                application_id: self.app.application_id.clone(),
                measure: self.app.measure.clone(),
                applicant_uscc: self.app.applicant.uscc.clone(),
                policy_version: self.policy.params.version.clone(),
                policy_hash: self.policy.hash.clone(),
                status,
                total: total.round(),
                lines: self.lines,
                // Telecom and residence-permit facts serve M4/M5 entitlements, not the money
                // decision; leaving them out keeps a 20,000-person award inside one message.
                facts: Facts {
                    telecom: None,
                    residence_permit: None,
                    ..self.facts.clone()
                },
                rules,
            },
            entitlements: self.entitlements,
        }
    }
}

/// The common steps, then the measure.
pub fn evaluate(
    policy: &Policy,
    claim_id: &str,
    app: &Application,
    facts: &Facts,
    history: &History,
) -> Evaluation {
    let mut b = Builder::new(policy, claim_id, app, facts, history);
    if !CLAIMABLE.contains(&app.measure.as_str()) {
        b.deny(
            "claim",
            None,
            format!(
                "measure `{}` is not claimable (claimable: {})",
                app.measure,
                CLAIMABLE.join(", ")
            ),
            "SR1",
        );
        return b.finish();
    }
    if !terms::in_policy_period(app, &policy.params) {
        let w = policy.params.policy_period;
        b.deny(
            "claim",
            None,
            format!(
                "submitted on {} (Asia/Shanghai), outside the policy period {} to {} (附则3)",
                terms::shanghai_date(&app.submitted_at),
                w.from,
                w.to
            ),
            "SR3",
        );
        return b.finish();
    }
    if let Err(why) = terms::eligible_applicant(app, facts, &policy.params) {
        b.deny("eligibility", None, why, "SR1");
        return b.finish();
    }
    match app.measure.as_str() {
        "M1" => {
            m1::decide(&mut b);
            m4::grant(&mut b);
            m5::grant(&mut b);
        }
        "M9" => m9::decide(&mut b),
        "M10" => m10::decide(&mut b),
        "M18" => m18::decide(&mut b),
        "M19" => m19::decide(&mut b),
        "M21" => m21::decide(&mut b),
        _ => unreachable!("checked against CLAIMABLE above"),
    }
    b.finish()
}

/// The social-insurance and presence facts of a claim, by ID number (M1, M4, M5, M19).
pub(crate) struct PersonFacts<'f> {
    pub insured: BTreeMap<&'f str, &'f huiqi_events::payloads::InsuredPerson>,
    pub presence: BTreeMap<&'f str, &'f huiqi_events::payloads::PresencePerson>,
}

impl<'f> PersonFacts<'f> {
    pub fn of(facts: &'f Facts) -> Self {
        PersonFacts {
            insured: by_id(
                facts.social_insurance.iter().flat_map(|r| r.persons.iter()),
                |x| x.id_number.as_str(),
            ),
            presence: by_id(facts.presence.iter().flat_map(|r| r.persons.iter()), |x| {
                x.id_number.as_str()
            }),
        }
    }
}

/// Facts looked up per person, with the reply entry for an id.
pub(crate) fn by_id<'f, T>(
    items: impl IntoIterator<Item = &'f T>,
    id: impl Fn(&T) -> &str,
) -> BTreeMap<&'f str, &'f T>
where
    T: 'f,
{
    let mut m = BTreeMap::new();
    for it in items {
        m.entry(id(it)).or_insert(it);
    }
    m
}
