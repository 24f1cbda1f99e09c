//! What an operator hands an auditor: the reconciliation of every service log and the
//! treasury's ledger (`huiqi audit report`), one claim's whole story across the four services
//! (`huiqi audit claim`), and what another policy version would change (`huiqi whatif`).
//!
//! Why from the logs: they are the system's record (hash-chained, each event signed by its
//! producer when published); the stream and the treasury ledger are the outside copies the
//! report reconciles them with.

use crate::commands::SERVICES;
use crate::HuiqiError;
use huiqi_eventlog::EventLog;
use huiqi_events::payloads::{
    AwardDecision, AwardStatus, PaymentOrdered, PayoutFailed, PayoutSettled,
};
use huiqi_events::{types, Envelope, Money};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Every log of `service` under `data_dir`: its one log, or each partition's of a split
/// service (empty when there is none). What the reports read is independent of the order.
fn open_all(data_dir: &Path, service: &str) -> Result<Vec<EventLog>, HuiqiError> {
    let dir = crate::commands::service_dir(data_dir, service);
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    crate::commands::partition_dirs(&dir)
        .iter()
        .map(|(_, d)| crate::commands::open_log(d))
        .collect()
}

fn unreadable(service: &str, seq: u64, e: impl std::fmt::Display) -> HuiqiError {
    HuiqiError::Input(format!("{service} log record {seq}: {e}"))
}

/// Committed and paid money of one measure.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MeasureTotals {
    pub decisions: u64,
    pub approved: u64,
    pub rejected: u64,
    /// Supplementary awards (`huiqi supplement`).
    pub supplements: u64,
    /// Sum of approved decisions' totals and of supplements.
    pub committed: Money,
    /// Sum of payment orders.
    pub ordered: Money,
    pub settled: Money,
    pub failed: Money,
    /// Ordered, with no settlement or failure recorded yet.
    pub pending: Money,
}

/// The reconciliation: totals per measure and every disagreement found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Reconciliation {
    pub by_measure: BTreeMap<String, MeasureTotals>,
    pub awards_approved: u64,
    pub payment_orders: u64,
    pub settlements: u64,
    pub failures: u64,
    pub treasury_entries: u64,
    pub treasury_settled: Money,
    /// Each problem names the award or claim and what disagrees. Empty: everything agrees.
    pub problems: Vec<String>,
}

/// `huiqi audit report`: reads the award and payout logs under `data_dir` and the treasury
/// ledger (when `ledger` exists), and reconciles them: every approved award has exactly one
/// payment order for its total; every order exactly one outcome (settled, or failed with a
/// reason), none still pending; no award settled twice; every settlement matches a treasury
/// entry (same amount and bank reference) and every treasury settlement a settlement event;
/// the sums agree.
pub fn report(data_dir: &Path, ledger: Option<&Path>) -> Result<Reconciliation, HuiqiError> {
    if !data_dir.is_dir() {
        return Err(HuiqiError::NotFound(format!(
            "no directory {}",
            data_dir.display()
        )));
    }
    let awards = open_all(data_dir, "award")?;
    if awards.is_empty() {
        return Err(HuiqiError::NotFound(format!(
            "no award log under {}",
            data_dir.display()
        )));
    }
    let mut r = Reconciliation::default();
    let mut decisions: BTreeMap<String, AwardDecision> = BTreeMap::new();
    let mut orders: BTreeMap<String, Vec<PaymentOrdered>> = BTreeMap::new();
    let mut supplements: BTreeMap<String, huiqi_events::payloads::AwardSupplement> =
        BTreeMap::new();
    for rec in awards.iter().flat_map(|award| award.records_from(1)) {
        let rec = rec?;
        match rec.envelope.ty.as_str() {
            types::AWARD_SUPPLEMENTED => {
                let s: huiqi_events::payloads::AwardSupplement = rec
                    .envelope
                    .data_as()
                    .map_err(|e| unreadable("award", rec.seq, e))?;
                let m = r.by_measure.entry(s.measure.clone()).or_default();
                m.supplements += 1;
                m.committed = m.committed + s.amount;
                if supplements.insert(s.award_id.clone(), s).is_some() {
                    r.problems
                        .push(format!("award log: a second supplement (seq {})", rec.seq));
                }
            }
            types::AWARD_DECIDED => {
                let d: AwardDecision = rec
                    .envelope
                    .data_as()
                    .map_err(|e| unreadable("award", rec.seq, e))?;
                let m = r.by_measure.entry(d.measure.clone()).or_default();
                m.decisions += 1;
                if d.status == AwardStatus::Approved {
                    m.approved += 1;
                    m.committed = m.committed + d.total;
                    r.awards_approved += 1;
                } else {
                    m.rejected += 1;
                }
                if decisions.insert(d.claim_id.clone(), d).is_some() {
                    r.problems
                        .push(format!("award log: claim decided twice (seq {})", rec.seq));
                }
            }
            types::PAYMENT_ORDERED => {
                let o: PaymentOrdered = rec
                    .envelope
                    .data_as()
                    .map_err(|e| unreadable("award", rec.seq, e))?;
                r.payment_orders += 1;
                r.by_measure.entry(o.measure.clone()).or_default().ordered =
                    r.by_measure[&o.measure].ordered + o.amount;
                orders.entry(o.award_id.clone()).or_default().push(o);
            }
            _ => {}
        }
    }
    // Every approved award with money has exactly one order for its total.
    for d in decisions.values() {
        let award_id = huiqi_award::award_id_for(&d.claim_id);
        let os = orders.get(&award_id).map(Vec::as_slice).unwrap_or(&[]);
        match (d.status, d.total.is_zero(), os) {
            (_, _, os) if os.len() > 1 => r
                .problems
                .push(format!("{award_id}: {} payment orders", os.len())),
            (AwardStatus::Approved, false, [o]) if o.amount != d.total => r.problems.push(format!(
                "{award_id}: ordered {} but the decision approved {}",
                o.amount, d.total
            )),
            (AwardStatus::Approved, false, [_]) => {}
            (AwardStatus::Approved, false, []) => r.problems.push(format!(
                "{award_id}: approved {} but never ordered",
                d.total
            )),
            (_, _, []) => {}
            (_, _, _) => r.problems.push(format!(
                "{award_id}: a payment order for a decision that is {:?} with total {}",
                d.status, d.total
            )),
        }
    }
    // Every supplement has exactly one order for its amount.
    for (award_id, s) in &supplements {
        match orders.get(award_id).map(Vec::as_slice).unwrap_or(&[]) {
            [o] if o.amount == s.amount => {}
            [o] => r.problems.push(format!(
                "{award_id}: ordered {} but the supplement is {}",
                o.amount, s.amount
            )),
            os => r.problems.push(format!(
                "{award_id}: {} payment orders for one supplement",
                os.len()
            )),
        }
    }
    for award_id in orders.keys() {
        let claim = format!("C-{}", award_id.trim_start_matches("A-"));
        if !decisions.contains_key(&claim) && !supplements.contains_key(award_id) {
            r.problems
                .push(format!("{award_id}: a payment order without a decision"));
        }
    }
    // Outcomes from the payout log.
    let mut settled: BTreeMap<String, Vec<PayoutSettled>> = BTreeMap::new();
    let mut failed: BTreeMap<String, Vec<PayoutFailed>> = BTreeMap::new();
    let payouts = open_all(data_dir, "payout")?;
    if !payouts.is_empty() {
        for rec in payouts.iter().flat_map(|payout| payout.records_from(1)) {
            let rec = rec?;
            match rec.envelope.ty.as_str() {
                types::PAYOUT_SETTLED => {
                    let s: PayoutSettled = rec
                        .envelope
                        .data_as()
                        .map_err(|e| unreadable("payout", rec.seq, e))?;
                    r.settlements += 1;
                    settled.entry(s.award_id.clone()).or_default().push(s);
                }
                types::PAYOUT_FAILED => {
                    let f: PayoutFailed = rec
                        .envelope
                        .data_as()
                        .map_err(|e| unreadable("payout", rec.seq, e))?;
                    r.failures += 1;
                    failed.entry(f.award_id.clone()).or_default().push(f);
                }
                _ => {}
            }
        }
    } else {
        r.problems.push("no payout log".into());
    }
    for (award_id, os) in &orders {
        let o = &os[0];
        let s = settled.get(award_id).map(Vec::as_slice).unwrap_or(&[]);
        let f = failed.get(award_id).map(Vec::as_slice).unwrap_or(&[]);
        let m = r.by_measure.entry(o.measure.clone()).or_default();
        match (s, f) {
            ([one], []) => {
                m.settled = m.settled + one.amount;
                if one.amount != o.amount {
                    r.problems.push(format!(
                        "{award_id}: settled {} for an order of {}",
                        one.amount, o.amount
                    ));
                }
            }
            ([], [one]) => {
                m.failed = m.failed + one.amount;
                if one.reason.trim().is_empty() {
                    r.problems
                        .push(format!("{award_id}: payment failed without a reason"));
                }
            }
            ([], []) => {
                m.pending = m.pending + o.amount;
                r.problems.push(format!(
                    "{award_id}: ordered {} with no settlement or failure yet",
                    o.amount
                ));
            }
            (s, f) => r.problems.push(format!(
                "{award_id}: {} settlements and {} failures for one order",
                s.len(),
                f.len()
            )),
        }
    }
    for award_id in settled.keys().chain(failed.keys()) {
        if !orders.contains_key(award_id) {
            r.problems.push(format!(
                "{award_id}: a payout outcome without a payment order"
            ));
        }
    }
    // The treasury's own ledger.
    let ledger_path = ledger
        .map(Path::to_path_buf)
        .unwrap_or_else(|| data_dir.join("treasury-ledger.jsonl"));
    if ledger_path.exists() {
        let entries = huiqi_providers::read_ledger(&ledger_path);
        r.treasury_entries = entries.len() as u64;
        let mut by_award: BTreeMap<&str, Vec<&huiqi_providers::LedgerEntry>> = BTreeMap::new();
        for e in &entries {
            by_award.entry(e.award_id.as_str()).or_default().push(e);
        }
        for (award_id, es) in &by_award {
            let paid: Vec<_> = es
                .iter()
                .filter(|e| e.reply.bank_reference.is_some())
                .collect();
            if paid.len() > 1 {
                r.problems.push(format!(
                    "{award_id}: the treasury settled it {} times",
                    paid.len()
                ));
            }
            for e in &paid {
                r.treasury_settled = r.treasury_settled + e.amount;
                match settled.get(*award_id).and_then(|s| s.first()) {
                    None => r.problems.push(format!(
                        "{award_id}: the treasury settled {} but no settlement event records it",
                        e.amount
                    )),
                    Some(s)
                        if s.amount != e.amount
                            || Some(&s.bank_reference) != e.reply.bank_reference.as_ref() =>
                    {
                        r.problems.push(format!(
                            "{award_id}: settlement {} {} disagrees with the treasury's {} {}",
                            s.amount,
                            s.bank_reference,
                            e.amount,
                            e.reply.bank_reference.as_deref().unwrap_or("")
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
        for award_id in settled.keys() {
            let in_ledger = by_award
                .get(award_id.as_str())
                .is_some_and(|es| es.iter().any(|e| e.reply.bank_reference.is_some()));
            if !in_ledger {
                r.problems.push(format!(
                    "{award_id}: a settlement event the treasury ledger does not show"
                ));
            }
        }
    }
    let sum = |f: fn(&MeasureTotals) -> Money| r.by_measure.values().map(f).sum::<Money>();
    let (committed, ordered) = (sum(|m| m.committed), sum(|m| m.ordered));
    let outcomes = sum(|m| m.settled) + sum(|m| m.failed) + sum(|m| m.pending);
    if committed != ordered {
        r.problems.push(format!(
            "sums: approved awards {committed} but payment orders {ordered}"
        ));
    }
    if ordered != outcomes {
        r.problems.push(format!(
            "sums: payment orders {ordered} but settled + failed + pending {outcomes}"
        ));
    }
    if ledger_path.exists() && r.treasury_settled != sum(|m| m.settled) {
        r.problems.push(format!(
            "sums: settlements {} but the treasury settled {}",
            sum(|m| m.settled),
            r.treasury_settled
        ));
    }
    Ok(r)
}

impl Reconciliation {
    pub fn render(&self) -> String {
        let mut t = comfy_table::Table::new();
        t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY)
            .set_header(vec![
                "measure",
                "decisions",
                "approved",
                "rejected",
                "supplements",
                "committed",
                "ordered",
                "settled",
                "failed",
                "pending",
            ]);
        let mut all = MeasureTotals::default();
        for (m, x) in &self.by_measure {
            t.add_row(row(m, x));
            all.decisions += x.decisions;
            all.approved += x.approved;
            all.rejected += x.rejected;
            all.supplements += x.supplements;
            all.committed = all.committed + x.committed;
            all.ordered = all.ordered + x.ordered;
            all.settled = all.settled + x.settled;
            all.failed = all.failed + x.failed;
            all.pending = all.pending + x.pending;
        }
        t.add_row(row("all", &all));
        let mut out = format!("{t}\n");
        out.push_str(&format!(
            "awards approved {}, payment orders {}, settlements {}, failures {}, treasury entries {} (settled ¥{})\n",
            self.awards_approved,
            self.payment_orders,
            self.settlements,
            self.failures,
            self.treasury_entries,
            self.treasury_settled
        ));
        if self.problems.is_empty() {
            out.push_str("reconciled: every approved award ordered once and paid once or failed with a reason; sums agree with the treasury\n");
        } else {
            out.push_str(&format!("{} PROBLEMS:\n", self.problems.len()));
            for p in &self.problems {
                out.push_str(&format!("  {p}\n"));
            }
        }
        out
    }

    /// One CSV row per measure (and `all`), for spreadsheets.
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "measure,decisions,approved,rejected,supplements,committed,ordered,settled,failed,pending\n",
        );
        for (m, x) in &self.by_measure {
            out.push_str(&row(m, x).join(","));
            out.push('\n');
        }
        out
    }
}

fn row(m: &str, x: &MeasureTotals) -> Vec<String> {
    vec![
        m.to_string(),
        x.decisions.to_string(),
        x.approved.to_string(),
        x.rejected.to_string(),
        x.supplements.to_string(),
        x.committed.to_string(),
        x.ordered.to_string(),
        x.settled.to_string(),
        x.failed.to_string(),
        x.pending.to_string(),
    ]
}

/// One event of a claim's story.
#[derive(Debug, Clone, Serialize)]
pub struct StoryEvent {
    pub service: String,
    pub log_sequence: u64,
    pub time: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub id: String,
    pub causationid: Option<String>,
    pub summary: String,
    /// The event's data, digit runs masked unless revealed.
    pub data: serde_json::Value,
}

/// Fields that name the system's own records, never a person: shown as they are.
const OWN_IDS: &[&str] = &[
    "claim_id",
    "award_id",
    "application_id",
    "event_id",
    "facts_digest",
    "policy_hash",
    "check_records",
    "application_digest",
    "bank_reference",
];

/// Masks every run of 8+ digits in every string of a JSON value (ID numbers, phones, bank
/// accounts, and any of them quoted in a reason), except in [`OWN_IDS`] fields.
fn masked(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(huiqi_events::mask_digit_runs(s)),
        Value::Array(a) => Value::Array(a.iter().map(masked).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let shown = if OWN_IDS.contains(&k.as_str()) {
                        v.clone()
                    } else {
                        masked(v)
                    };
                    (k.clone(), shown)
                })
                .collect(),
        ),
        v => v.clone(),
    }
}

fn summary(env: &Envelope, d: &serde_json::Value) -> String {
    let s = |k: &str| d[k].as_str().unwrap_or("").to_string();
    match env.ty.as_str() {
        types::INTAKE_ACCEPTED => format!("accepted as claim {}", s("claim_id")),
        types::INTAKE_REJECTED => format!(
            "rejected at intake: {}",
            d["errors"]
                .as_array()
                .map(|e| e
                    .iter()
                    .map(|x| format!(
                        "{} {}",
                        x["field"].as_str().unwrap_or(""),
                        x["code"].as_str().unwrap_or("")
                    ))
                    .collect::<Vec<_>>()
                    .join("; "))
                .unwrap_or_default()
        ),
        types::CLAIM_OPENED => format!(
            "claim opened for {} ({}), {} list entries",
            d["application"]["application_id"].as_str().unwrap_or(""),
            d["application"]["measure"].as_str().unwrap_or(""),
            d["application"]
                .as_object()
                .map(|a| a
                    .values()
                    .filter_map(|v| v.as_array())
                    .map(Vec::len)
                    .sum::<usize>())
                .unwrap_or(0)
        ),
        types::CHECK_RECORDED => format!(
            "check {} chunk {} of {} answered after {} attempt(s)",
            s("check"),
            d["chunk"].as_u64().unwrap_or(0) + 1,
            d["chunks"],
            d["attempts"]
        ),
        types::CLAIM_VERIFIED => format!(
            "verified: every check answered ({} embedded records)",
            d["records"].as_array().map(Vec::len).unwrap_or(0)
        ),
        types::AWARD_SUPPLEMENTED => format!(
            "supplementary award {} under {}: total {} → {}, pays {}",
            s("award_id"),
            s("policy_version"),
            s("replaces_total"),
            s("total"),
            s("amount")
        ),
        types::AWARD_DECIDED => format!(
            "{} {} under {}: total {} ({} lines, facts {})",
            s("measure"),
            s("status"),
            s("policy_version"),
            s("total"),
            d["lines"].as_array().map(Vec::len).unwrap_or(0),
            &s("facts_digest")[..12.min(s("facts_digest").len())]
        ),
        types::PAYMENT_ORDERED => format!("payment ordered: {} for {}", s("amount"), s("award_id")),
        types::PAYMENT_ATTEMPTED => format!("treasury instruction, attempt {}", d["attempt"]),
        types::PAYOUT_SETTLED => format!("settled {} ref {}", s("amount"), s("bank_reference")),
        types::PAYOUT_FAILED => format!("payment failed: {}", s("reason")),
        types::ENTITLEMENT_DATA_PACKAGE | types::ENTITLEMENT_RESIDENT_POINTS => format!(
            "{} grants",
            d["grants"].as_array().map(Vec::len).unwrap_or(0)
        ),
        other => other.to_string(),
    }
}

/// `huiqi audit claim ID`: every event of one claim (by claim id or application id) across the
/// four service logs, in time order; identifiers masked unless `reveal`.
pub fn claim_story(data_dir: &Path, id: &str, reveal: bool) -> Result<Vec<StoryEvent>, HuiqiError> {
    if !data_dir.is_dir() {
        return Err(HuiqiError::NotFound(format!(
            "no directory {}",
            data_dir.display()
        )));
    }
    let claim_id = if id.starts_with("C-") {
        id.to_string()
    } else {
        huiqi_intake::claim_id_for(id)
    };
    let mut out = Vec::new();
    let mut application_id = (!id.starts_with("C-")).then(|| id.to_string());
    for (service, log) in SERVICES
        .iter()
        .map(|s| open_all(data_dir, s).map(|logs| logs.into_iter().map(move |l| (*s, l))))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
    {
        let mut records = log.subject_records(&claim_id)?;
        if application_id.is_none() {
            application_id = records.iter().find_map(|r| {
                r.envelope.data.value()["application"]["application_id"]
                    .as_str()
                    .map(str::to_string)
            });
        }
        if let Some(a) = &application_id {
            records.extend(log.subject_records(a)?);
        }
        for r in records {
            let data = r.envelope.data.value();
            let data = if reveal { data } else { masked(&data) };
            out.push(StoryEvent {
                service: service.to_string(),
                log_sequence: r.seq,
                time: r.envelope.time.to_rfc3339(),
                ty: r.envelope.ty.clone(),
                id: r.envelope.id.clone(),
                causationid: r.envelope.causationid.clone(),
                summary: summary(&r.envelope, &data),
                data,
            });
        }
    }
    if out.is_empty() {
        return Err(HuiqiError::NotFound(format!(
            "no claim {id} in {}",
            data_dir.display()
        )));
    }
    if reveal {
        tracing::warn!(claim_id = %claim_id, "audit claim --reveal: identity numbers shown unmasked");
    }
    // An event is in its producer's log and in the log of each service that consumed it:
    // show it once, from its producer's log when that is among them.
    let producer_first =
        |e: &StoryEvent| huiqi_events::types::produced_by(&e.service).contains(&e.ty.as_str());
    out.sort_by(|a, b| {
        (a.id.as_str(), !producer_first(a), a.service.as_str()).cmp(&(
            b.id.as_str(),
            !producer_first(b),
            b.service.as_str(),
        ))
    });
    out.dedup_by(|later, first| later.id == first.id);
    out.sort_by(|a, b| (a.time.as_str(), a.log_sequence).cmp(&(b.time.as_str(), b.log_sequence)));
    Ok(out)
}

/// The story as tables: the events, then the decision's lines with the rules they quote.
pub fn render_story(events: &[StoryEvent]) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY)
        .set_header(vec!["time", "service", "seq", "event", "what happened"]);
    for e in events {
        t.add_row(vec![
            e.time.clone(),
            e.service.clone(),
            e.log_sequence.to_string(),
            e.ty.clone(),
            e.summary.clone(),
        ]);
    }
    let mut out = format!("{t}\n");
    if let Some(d) = events.iter().find(|e| e.ty == types::AWARD_DECIDED) {
        let mut lines = comfy_table::Table::new();
        lines
            .load_preset(comfy_table::presets::UTF8_BORDERS_ONLY)
            .set_header(vec!["item", "person", "amount", "paid", "reason", "rule"]);
        for l in d.data["lines"].as_array().into_iter().flatten() {
            lines.add_row(vec![
                l["item"].as_str().unwrap_or("").to_string(),
                l["person"].as_str().unwrap_or("-").to_string(),
                l["amount"].as_str().unwrap_or("").to_string(),
                l["paid"].to_string(),
                l["reason"].as_str().unwrap_or("").to_string(),
                l["rule"].as_str().unwrap_or("").to_string(),
            ]);
        }
        out.push_str(&format!("decision lines:\n{lines}\n"));
        out.push_str("rules quoted:\n");
        for (code, text) in d.data["rules"].as_object().into_iter().flatten() {
            out.push_str(&format!("  {code}: {}\n", text.as_str().unwrap_or("")));
        }
        out.push_str(&format!(
            "facts: digest {} from check records {}\n",
            d.data["facts_digest"].as_str().unwrap_or(""),
            d.data["check_records"]
                .as_array()
                .map(|a| a.len())
                .unwrap_or(0)
        ));
        for r in d.data["relied_on"].as_array().into_iter().flatten() {
            out.push_str(&format!("  relied on: {r}\n"));
        }
    }
    let mut facts: Vec<serde_json::Value> = events
        .iter()
        .flat_map(|e| {
            let mut v = Vec::new();
            if e.ty == types::CHECK_RECORDED {
                v.push(e.data.clone());
            }
            if e.ty == types::CLAIM_VERIFIED {
                for r in e.data["records"].as_array().into_iter().flatten() {
                    v.push(r["record"].clone());
                }
            }
            v
        })
        .collect();
    facts.sort_by_key(|f| (f["check"].to_string(), f["chunk"].as_u64()));
    facts.dedup_by(|a, b| a["check"] == b["check"] && a["chunk"] == b["chunk"]);
    if !facts.is_empty() {
        out.push_str("facts used (check replies as recorded):\n");
        for f in facts {
            out.push_str(&format!(
                "  {} chunk {}: {}\n",
                f["check"].as_str().unwrap_or(""),
                f["chunk"],
                f["reply"]
            ));
        }
    }
    out
}

/// One service's log checked against the heads it anchored on the stream.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HeadCheck {
    pub service: String,
    /// Anchored heads found on the stream (signed by this service's key).
    pub anchors: u64,
    pub latest_anchored: u64,
    /// The local log's head sequence (0: no log here).
    pub local_head: u64,
    /// Anchors the local log disagrees with: a different hash at that sequence, or a log that
    /// ends before it.
    pub mismatches: Vec<String>,
    /// Head events on the stream whose signature was refused (not counted as anchors).
    pub refused: Vec<String>,
}

/// `huiqi audit heads`: every `huiqi.log.head.v1` on the stream (signatures checked against
/// `trust`) compared with the service logs under `data_dir` (services stopped).
pub async fn check_heads(
    options: &huiqi_bus::NatsOptions,
    data_dir: &Path,
    trust: &huiqi_bus::trust::TrustStore,
) -> Result<Vec<HeadCheck>, HuiqiError> {
    use huiqi_bus::trust::{Mode, SIGNATURE_HEADER};
    if !data_dir.is_dir() {
        return Err(HuiqiError::NotFound(format!(
            "no directory {}",
            data_dir.display()
        )));
    }
    let nats = |e: &dyn std::fmt::Display| HuiqiError::Nats(e.to_string());
    let client = options
        .connect("huiqi-audit-heads")
        .await
        .map_err(|e| nats(&e))?;
    let js = async_nats::jetstream::new(client);
    let filter = format!("{}.>", huiqi_events::subjects::HEADS_PREFIX);
    let messages = huiqi_bus::setup::read_all(&js, &filter, std::time::Duration::from_secs(10))
        .await
        .map_err(|e| nats(&e))?;
    // One check per log: a service's, or each partition's of a split service (`award-p1`,
    // its log in `<dir>/p1`, its heads on `huiqi.heads.award.1`).
    let mut checks: BTreeMap<String, HeadCheck> = BTreeMap::new();
    let mut logs: BTreeMap<String, Option<EventLog>> = BTreeMap::new();
    for s in SERVICES {
        let dir = crate::commands::service_dir(data_dir, s);
        for (partition, dir) in crate::commands::partition_dirs(&dir) {
            let name = partition.durable(s);
            let log = if dir.is_dir() {
                Some(crate::commands::open_log(&dir)?)
            } else {
                None
            };
            let mut check = HeadCheck {
                service: name.clone(),
                ..Default::default()
            };
            if let Some(l) = &log {
                check.local_head = l.head()?.0;
            }
            checks.insert(name.clone(), check);
            logs.insert(name, log);
        }
    }
    for msg in messages {
        let rest = msg
            .subject
            .strip_prefix(&format!("{}.", huiqi_events::subjects::HEADS_PREFIX))
            .unwrap_or("");
        let (service, name) = match rest.split_once('.') {
            Some((service, i)) => (service.to_string(), format!("{service}-p{i}")),
            None => (rest.to_string(), rest.to_string()),
        };
        if !SERVICES.contains(&service.as_str()) {
            continue;
        }
        let check = checks.entry(name.clone()).or_insert_with(|| HeadCheck {
            service: name.clone(),
            ..Default::default()
        });
        let header = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(SIGNATURE_HEADER))
            .map(|v| v.as_str().to_string());
        let seq_on_stream = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
        match trust.verify(header.as_deref(), &msg.payload, Mode::History) {
            Ok(signer) if signer.service == service => {}
            Ok(signer) => {
                check.refused.push(format!(
                    "stream seq {seq_on_stream}: signed by {}, not {service}",
                    signer.service
                ));
                continue;
            }
            Err(e) => {
                check
                    .refused
                    .push(format!("stream seq {seq_on_stream}: {e}"));
                continue;
            }
        }
        let head: huiqi_events::payloads::LogHead = Envelope::decode(&msg.payload)
            .map_err(|e| HuiqiError::Input(e.to_string()))?
            .data_as()
            .map_err(|e| HuiqiError::Input(e.to_string()))?;
        check.anchors += 1;
        check.latest_anchored = check.latest_anchored.max(head.log_sequence);
        let Some(Some(log)) = logs.get(&name) else {
            check.mismatches.push(format!(
                "head {} anchored, but there is no {name} log here",
                head.log_sequence
            ));
            continue;
        };
        match log.records_from(head.log_sequence).next() {
            Some(Ok(r)) if r.seq == head.log_sequence => {
                let local = huiqi_bus::anchor::hex(&r.hash);
                if local != head.head_hash {
                    check.mismatches.push(format!(
                            "record {}: the log's chain hash {} is not the anchored {} (the log was rewritten)",
                            head.log_sequence,
                            &local[..16],
                            &head.head_hash[..16.min(head.head_hash.len())]
                        ));
                }
            }
            Some(Err(e)) => check
                .mismatches
                .push(format!("record {}: {e}", head.log_sequence)),
            _ => check.mismatches.push(format!(
                "record {} was anchored but the log ends at {} (truncated or lost)",
                head.log_sequence, check.local_head
            )),
        }
    }
    Ok(checks.into_values().collect())
}

/// The head checks as text.
pub fn render_heads(checks: &[HeadCheck]) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY)
        .set_header(vec![
            "service",
            "anchors",
            "latest anchored",
            "local head",
            "verdict",
        ]);
    for c in checks {
        let verdict = if !c.mismatches.is_empty() {
            format!(
                "{} MISMATCHES\n{}",
                c.mismatches.len(),
                c.mismatches.join("\n")
            )
        } else if c.anchors == 0 {
            "no anchors yet".to_string()
        } else {
            "matches every anchored head".to_string()
        };
        let verdict = if c.refused.is_empty() {
            verdict
        } else {
            format!(
                "{verdict}\n{} refused: {}",
                c.refused.len(),
                c.refused.join("; ")
            )
        };
        t.add_row(vec![
            c.service.clone(),
            c.anchors.to_string(),
            c.latest_anchored.to_string(),
            c.local_head.to_string(),
            verdict,
        ]);
    }
    format!("{t}\n")
}
