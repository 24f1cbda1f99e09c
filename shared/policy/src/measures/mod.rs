//! The claimable measures, one [`Measure`] each, and the steps every decision shares: policy
//! period (附则3), eligible applicant (附则1), then the measure's own rule with take-the-highest
//! (附则2) and caps, then rounding and totals.
//!
//! Adding a measure: its module here (lists, checks, decision, counts), one line in
//! [`MEASURES`], and its parameters in `params.rs` and the version files.

pub mod m1;
pub mod m10;
pub mod m18;
pub mod m19;
pub mod m21;
pub mod m4;
pub mod m5;
pub mod m9;

use crate::{rules, terms, Entitlement, Evaluation, History, Policy};
use huiqi_events::checks::Check;
use huiqi_events::history::{Count, Key, Kind, Relied};
use huiqi_events::payloads::{Application, AwardDecision, AwardLine, AwardStatus, Facts};
use huiqi_events::Money;
use std::collections::{BTreeMap, BTreeSet};

/// One claimable measure: everything the pipeline needs to know about it, in one place.
pub trait Measure: Sync {
    /// The code applications name (`M1`, …).
    fn code(&self) -> &'static str;
    /// Which application lists it reads.
    fn lists(&self) -> Lists;
    /// The checks it needs, in the order they are asked.
    fn checks(&self) -> &'static [Check];
    /// Decides a claim: lines, counts, entitlements.
    fn decide(&self, b: &mut Builder<'_>);
}

/// Every claimable measure.
pub static MEASURES: &[&dyn Measure] =
    &[&m1::M1, &m9::M9, &m10::M10, &m18::M18, &m19::M19, &m21::M21];

/// The measure an application names.
pub fn measure(code: &str) -> Option<&'static dyn Measure> {
    MEASURES.iter().copied().find(|m| m.code() == code)
}

/// The application's lists of people and items (CONTRACT.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    Employees,
    Returnees,
    Exhibitions,
    Trips,
    Charters,
    Placements,
}

impl List {
    pub const ALL: &'static [List] = &[
        List::Employees,
        List::Returnees,
        List::Exhibitions,
        List::Trips,
        List::Charters,
        List::Placements,
    ];

    pub fn name(self) -> &'static str {
        match self {
            List::Employees => "employees",
            List::Returnees => "returnees",
            List::Exhibitions => "exhibitions",
            List::Trips => "trips",
            List::Charters => "charters",
            List::Placements => "placements",
        }
    }

    /// How many entries the application gives (None: the list is absent).
    pub fn len(self, app: &Application) -> Option<usize> {
        match self {
            List::Employees => app.employees.as_ref().map(Vec::len),
            List::Returnees => app.returnees.as_ref().map(Vec::len),
            List::Exhibitions => app.exhibitions.as_ref().map(Vec::len),
            List::Trips => app.trips.as_ref().map(Vec::len),
            List::Charters => app.charters.as_ref().map(Vec::len),
            List::Placements => app.placements.as_ref().map(Vec::len),
        }
    }
}

/// Which lists a measure reads: each of `all_of` must be present and non-empty, at least one
/// of `any_of` (when it names any), and none outside `allowed`.
#[derive(Debug, Clone, Copy)]
pub struct Lists {
    pub all_of: &'static [List],
    pub any_of: &'static [List],
    pub allowed: &'static [List],
}

/// Collects a decision: lines, the history it relied on, what it counts, entitlements.
pub struct Builder<'a> {
    pub policy: &'a Policy,
    pub app: &'a Application,
    pub facts: &'a Facts,
    pub history: &'a History,
    claim_id: String,
    lines: Vec<AwardLine>,
    rules: BTreeSet<&'static str>,
    pub entitlements: Vec<Entitlement>,
    counts: Vec<Count>,
    relied: BTreeSet<Relied>,
    /// Prior payments already used in this claim: enterprise-level (None) and per person.
    prior_used: BTreeMap<Option<String>, Money>,
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
            counts: Vec::new(),
            relied: BTreeSet::new(),
            prior_used: BTreeMap::new(),
        }
    }

    pub fn params(&self) -> &'a crate::Params {
        &self.policy.params
    }

    pub fn uscc(&self) -> &'a str {
        &self.app.applicant.uscc
    }

    pub fn measure(&self) -> &'a str {
        &self.app.measure
    }

    /// A paid line (the amount is rounded half-up to the fen here, once); a zero amount is
    /// recorded as not paid.
    pub fn pay(
        &mut self,
        item: &str,
        person: Option<&str>,
        amount: Money,
        reason: String,
        rule: &'static str,
    ) {
        let amount = amount.round();
        let paid = amount > Money::ZERO;
        self.push(item, person, amount, paid, reason, rule);
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

    /// Notes that a rule was applied (its text goes into the decision).
    pub fn rule(&mut self, rule: &'static str) {
        self.rules.insert(rule);
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

    /// Adds a count this decision makes in the history.
    pub fn count(&mut self, key: Key, amount: Money) {
        self.counts.push(Count {
            key,
            amount: amount.round(),
        });
    }

    /// Reads the history under `key`, noting every entry as relied on with `effect`.
    pub fn rely(&mut self, key: &Key, effect: &str) -> Vec<crate::history::Entry> {
        let entries = self.history.get(key).to_vec();
        for e in &entries {
            self.relied.insert(Relied {
                key: key.clone(),
                claim_id: e.claim_id.to_string(),
                amount: e.amount,
                effect: effect.to_string(),
            });
        }
        entries
    }

    /// The sum under `key`, relied on with `effect` when not zero.
    pub fn rely_total(&mut self, key: &Key, effect: &str) -> Money {
        self.rely(key, effect).iter().map(|e| e.amount).sum()
    }

    /// 附则2 for one person: what other policies paid this person for this measure's subject
    /// matter, less what earlier claims and earlier lines of this claim already offset
    /// (counted once, ruling 3), and the words naming those payments.
    pub fn person_prior_left(&mut self, person: &str) -> (Money, String) {
        let (paid, named) = terms::prior_paid(self.facts, Some(person));
        if paid.is_zero() {
            return (Money::ZERO, String::new());
        }
        let key = self.prior_key(Some(person));
        let before = self.rely_total(&key, "prior payment already offset by this claim");
        let here = self
            .prior_used
            .get(&Some(person.to_string()))
            .copied()
            .unwrap_or_default();
        (sub(paid, before + here), named.join("; "))
    }

    fn prior_key(&self, person: Option<&str>) -> Key {
        let key = Key::new(self.measure(), Kind::PriorOffset).uscc(self.uscc());
        match person {
            Some(p) => key.person(p),
            None => key,
        }
    }

    /// Nets `ours` against the person's prior payments not yet offset (附则2, ruling 4):
    /// `max(0, ours − left)`, recording what was used, with the words that explain it.
    pub fn net_for_person(&mut self, ours: Money, person: &str) -> (Money, Option<String>) {
        let (left, named) = self.person_prior_left(person);
        if left.is_zero() {
            return (ours, None);
        }
        let used = if left >= ours { ours } else { left };
        *self.prior_used.entry(Some(person.to_string())).or_default() = self
            .prior_used
            .get(&Some(person.to_string()))
            .copied()
            .unwrap_or_default()
            + used;
        self.count(self.prior_key(Some(person)), used);
        self.rules.insert("SR2");
        (
            sub(ours, used),
            Some(format!(
                "already paid by another policy: {named} — pays only the difference up to ¥{} (不重复享受、就高原则, 附则2)",
                ours.round()
            )),
        )
    }

    /// Nets every paid line of a person against that person's prior payments not yet offset
    /// (附则2 per person first, ruling 4), in line order.
    pub fn net_lines_per_person(&mut self) {
        for i in 0..self.lines.len() {
            let (paid, person, amount) = {
                let l = &self.lines[i];
                (l.paid, l.person.clone(), l.amount)
            };
            let (true, Some(person)) = (paid, person) else {
                continue;
            };
            let (net, why) = self.net_for_person(amount, &person);
            if let Some(why) = why {
                let l = &mut self.lines[i];
                l.reason = format!("{}; {why}", l.reason);
                l.amount = net.round();
                if net.is_zero() {
                    l.paid = false;
                }
            }
        }
    }

    /// Ruling 3: enterprise-level payments of other policies for this measure, less what
    /// earlier claims already offset, reduce the paid lines in order (offset once across all
    /// claims); records the offset used.
    pub fn offset_enterprise_prior(&mut self) {
        let (paid, named) = terms::prior_paid(self.facts, None);
        if paid.is_zero() {
            return;
        }
        let key = self.prior_key(None);
        let before = self.rely_total(&key, "enterprise-level prior payment already offset");
        let mut left = sub(paid, before);
        if left.is_zero() {
            self.rules.insert("SR2");
            return;
        }
        let note = format!(
            "reduced by enterprise-level payments of other policies: {} (不重复享受、就高原则, 附则2; offset once across claims, ¥{} of ¥{} offset before)",
            named.join("; "),
            before.round(),
            paid.round()
        );
        let mut used = Money::ZERO;
        for l in self.lines.iter_mut().filter(|l| l.paid) {
            if left.is_zero() {
                break;
            }
            let cut = if left >= l.amount { l.amount } else { left };
            left = left - cut;
            used = used + cut;
            l.amount = (l.amount - cut).round();
            l.reason = format!("{}; {note}", l.reason);
            if l.amount.is_zero() {
                l.paid = false;
            }
        }
        self.rules.insert("SR2");
        if !used.is_zero() {
            self.count(key, used);
        }
    }

    /// A cap across claims on the paid lines (ruling 4: it binds on the sum of net amounts):
    /// what `total_key` already holds is relied on, the paid lines are reduced in order to fit
    /// the room left, and the total paid is counted under `total_key`.
    pub fn cap(&mut self, total_key: Key, cap: Money, what: &str) {
        let already = self.rely_total(&total_key, "counts against the cap");
        let mut room = sub(cap, already);
        for l in self.lines.iter_mut().filter(|l| l.paid) {
            if room.is_zero() {
                l.paid = false;
                l.amount = Money::ZERO.round();
                l.reason = format!(
                    "{} — but {what} reached its cap of ¥{} (¥{} awarded before)",
                    l.reason,
                    cap.round(),
                    already.round()
                );
            } else if l.amount > room {
                l.amount = room.round();
                l.reason = format!(
                    "{}; capped: {what} at most ¥{} (¥{} awarded before)",
                    l.reason,
                    cap.round(),
                    already.round()
                );
                room = Money::ZERO;
            } else {
                room = room - l.amount;
            }
        }
        let total: Money = self.lines.iter().filter(|l| l.paid).map(|l| l.amount).sum();
        if !total.is_zero() {
            self.count(total_key, total);
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
            .map(|c| (c.to_string(), rules::quoted(c)))
            .collect();
        self.entitlements.sort();
        self.counts.sort();
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
                facts_digest: self.facts.digest(),
                // The award service names the check records it assembled the facts from.
                check_records: Vec::new(),
                rules,
                counts: self.counts,
                relied_on: self.relied.into_iter().collect(),
            },
            entitlements: self.entitlements,
        }
    }
}

/// `a − b`, never below zero.
pub fn sub(a: Money, b: Money) -> Money {
    if b >= a {
        Money::ZERO
    } else {
        a - b
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
    let Some(measure) = measure(&app.measure) else {
        b.deny(
            "claim",
            None,
            format!(
                "measure `{}` is not claimable (claimable: {})",
                app.measure,
                MEASURES
                    .iter()
                    .map(|m| m.code())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "SR1",
        );
        return b.finish();
    };
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
    measure.decide(&mut b);
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

/// Picks which candidates fill `places` (ruling 4): the highest net amounts first, ties in
/// roster order. Returns, per candidate index, whether it got a place.
pub(crate) fn best_places(nets: &[Money], places: usize) -> Vec<bool> {
    let mut order: Vec<usize> = (0..nets.len()).filter(|i| nets[*i] > Money::ZERO).collect();
    order.sort_by(|a, b| nets[*b].cmp(&nets[*a]).then(a.cmp(b)));
    let mut chosen = vec![false; nets.len()];
    for i in order.into_iter().take(places) {
        chosen[i] = true;
    }
    chosen
}
