//! The `data` of every event: the application and award payloads of CONTRACT.md, the check
//! replies, and the internal events between services.

use crate::money::Money;
use chrono::{DateTime, FixedOffset, NaiveDate};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Application (portal → intake)
// ---------------------------------------------------------------------------------------------

/// `huiqi.applications.submitted` data. Unknown fields are refused so that a portal's typo is
/// reported instead of silently ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Application {
    pub application_id: String,
    pub measure: String,
    pub submitted_at: DateTime<FixedOffset>,
    pub applicant: Applicant,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employees: Option<Vec<Employee>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returnees: Option<Vec<Returnee>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exhibitions: Option<Vec<Exhibition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trips: Option<Vec<Trip>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charters: Option<Vec<Charter>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placements: Option<Vec<Placement>>,
}

impl Application {
    /// SHA-256 (hex) of the application's canonical JSON (field order of the type, absent lists
    /// left out): the same content gives the same digest whatever whitespace or key order the
    /// portal sent.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let bytes = serde_json::to_vec(self).expect("an application always serializes");
        Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Every person's ID number the application names, in roster order, without repeats.
    pub fn person_ids(&self) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        let mut push = |id: &str| {
            if seen.insert(id.to_string()) {
                out.push(id.to_string());
            }
        };
        for e in self.employees.iter().flatten() {
            push(&e.id_number);
        }
        for r in self.returnees.iter().flatten() {
            push(&r.id_number);
        }
        for x in self.exhibitions.iter().flatten() {
            x.travellers.iter().for_each(|t| push(&t.id_number));
        }
        for t in self.trips.iter().flatten() {
            t.travellers.iter().for_each(|t| push(&t.id_number));
        }
        for c in self.charters.iter().flatten() {
            c.passengers.iter().for_each(|p| push(p));
        }
        for p in self.placements.iter().flatten() {
            push(&p.id_number);
        }
        out
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ApplicantKind {
    Enterprise,
    SocialOrg,
    PrivateNonEnterprise,
    HrAgency,
    LaborDispatch,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Applicant {
    pub uscc: String,
    pub name: String,
    pub kind: ApplicantKind,
    pub street: String,
    pub bank_account: String,
    #[serde(default)]
    pub dispatch_agreement: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Employee {
    pub id_number: String,
    pub name: String,
    #[serde(default)]
    pub phone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Returnee {
    pub id_number: String,
    pub name: String,
    pub return_date: NaiveDate,
    #[serde(default)]
    pub poverty_alleviated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Traveller {
    pub id_number: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Exhibition {
    pub name: String,
    pub country: String,
    pub start_date: NaiveDate,
    pub travellers: Vec<Traveller>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TripTraveller {
    pub id_number: String,
    pub airfare: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Trip {
    pub country: String,
    pub purpose: String,
    pub departure_date: NaiveDate,
    pub travellers: Vec<TripTraveller>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Charter {
    pub contract_no: String,
    pub departure_date: NaiveDate,
    pub origin_province: String,
    pub applicant_cost: Money,
    pub passengers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    pub id_number: String,
    pub name: String,
    pub employer_uscc: String,
}

// ---------------------------------------------------------------------------------------------
// Intake replies
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IntakeAccepted {
    pub application_id: String,
    pub claim_id: String,
}

/// One specific problem: which field, which rule, and words for a person.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct FieldError {
    pub field: String,
    pub code: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, code: &str, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            code: code.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IntakeRejected {
    pub application_id: String,
    pub errors: Vec<FieldError>,
}

// ---------------------------------------------------------------------------------------------
// Internal events
// ---------------------------------------------------------------------------------------------

/// Intake opened a claim for an accepted application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClaimOpened {
    pub claim_id: String,
    pub application: Application,
    /// SHA-256 of the application as accepted ([`Application::digest`]): a later submission
    /// under the same application id with other content is refused (POLICY.md ruling 9).
    #[serde(default)]
    pub application_digest: String,
}

/// Verification received one answer from a check provider (one chunk of a batched check),
/// typed: `{claim_id, check, chunk, chunks, attempts, reply}` on the wire.
// Read by a deserializer of its own (`checks.rs`): serde's derive for a flattened tagged enum
// buffers the whole record, person lists included, before reading it — a fifth of award's CPU
// went to decoding the records inside verified claims that way. (Not in the doc comment: that
// is the published schema's description.)
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct CheckRecorded {
    pub claim_id: String,
    pub chunk: u32,
    pub chunks: u32,
    pub attempts: u32,
    #[serde(flatten)]
    pub reply: crate::checks::CheckReply,
}

impl CheckRecorded {
    pub fn check(&self) -> crate::checks::Check {
        self.reply.check()
    }
}

/// Verification finished every planned check for a claim. For a roster up to
/// [`EMBED_FACTS_UP_TO`] persons the check records travel inside this event (`records`: one
/// message per claim instead of one per reply); for a larger roster, whose facts would not fit
/// one message, they travel as [`CheckRecorded`] events before it and `records` is empty.
/// `checks` says how many chunks of each check to expect either way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClaimVerified {
    pub claim_id: String,
    pub application: Application,
    pub checks: std::collections::BTreeMap<crate::checks::Check, u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<EmbeddedRecord>,
}

/// A check record carried inside a verified claim, with the id of the event verification
/// logged it under (what a decision's `check_records` names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EmbeddedRecord {
    pub event_id: String,
    pub record: CheckRecorded,
}

/// A [`ClaimVerified`] as verification writes it: the same JSON to the byte, but each embedded
/// record is the `data` of the check record event verification logged, as logged, so the
/// replies of a claim are serialized once (into their own events), not a second time into the
/// verified claim, and the application is not copied to be written.
#[derive(Debug, Serialize)]
pub struct ClaimVerifiedOut<'a> {
    pub claim_id: &'a str,
    pub application: &'a Application,
    pub checks: &'a std::collections::BTreeMap<crate::checks::Check, u32>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub records: &'a [EmbeddedOut<'a>],
}

/// One record of a [`ClaimVerifiedOut`]: a logged check record event's id and `data`.
#[derive(Debug, Serialize)]
pub struct EmbeddedOut<'a> {
    pub event_id: &'a str,
    pub record: &'a crate::envelope::Data,
}

/// Rosters up to this many persons have their facts embedded in the verified claim.
pub const EMBED_FACTS_UP_TO: usize = 1_000;

impl Facts {
    /// SHA-256 (hex) of the facts' canonical JSON (field order of the types): what a decision
    /// records as `facts_digest`, and what an auditor recomputes from the check records.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let bytes = serde_json::to_vec(self).expect("facts always serialize");
        Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Joins recorded check replies (chunks of one check concatenate their lists, in chunk
    /// order; a repeated chunk counts once) into the facts of a claim. Takes the records by
    /// value: the replies are moved, not copied.
    pub fn assemble(records: impl IntoIterator<Item = CheckRecorded>) -> Result<Facts, String> {
        let mut by_check: std::collections::BTreeMap<crate::checks::Check, Vec<CheckRecorded>> =
            Default::default();
        for r in records {
            by_check.entry(r.check()).or_default().push(r);
        }
        let mut facts = Facts::default();
        for (_, mut chunks) in by_check {
            chunks.sort_by_key(|c| c.chunk);
            chunks.dedup_by_key(|c| c.chunk);
            let mut chunks = chunks.into_iter();
            let Some(first) = chunks.next() else { continue };
            let mut joined = first.reply;
            for c in chunks {
                joined.merge(c.reply)?;
            }
            joined.into_facts(&mut facts);
        }
        Ok(facts)
    }
}

/// Award → payout: pay this approved award.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PaymentOrdered {
    pub award_id: String,
    pub claim_id: String,
    pub application_id: String,
    pub measure: String,
    pub payee_uscc: String,
    pub bank_account: String,
    pub amount: Money,
}

/// Payout is about to send (or re-send) an instruction to the treasury.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PaymentAttempted {
    pub award_id: String,
    pub attempt: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PayoutSettled {
    pub award_id: String,
    pub claim_id: String,
    pub amount: Money,
    pub bank_reference: String,
    pub settled_at: DateTime<FixedOffset>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PayoutFailed {
    pub award_id: String,
    pub claim_id: String,
    pub amount: Money,
    pub reason: String,
}

/// One 20 GB data package for one number (M4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DataPackageGrant {
    pub phone: String,
    pub carrier: String,
    pub gigabytes: u32,
}

/// `huiqi.entitlements.data_package` (v2): the data packages of one claim for one carrier, at
/// most [`GRANTS_PER_EVENT`] an event (CONTRACT.md, decided 2026-11-27).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DataPackageEntitlement {
    pub claim_id: String,
    pub award_id: String,
    pub grants: Vec<DataPackageGrant>,
}

/// New-resident points for one person (M5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PointsGrant {
    pub id_number: String,
    pub points: u32,
}

/// `huiqi.entitlements.resident_points` (v2): the points of one claim, at most
/// [`GRANTS_PER_EVENT`] an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResidentPointsEntitlement {
    pub claim_id: String,
    pub award_id: String,
    pub grants: Vec<PointsGrant>,
}

/// Most grants one entitlement event carries.
pub const GRANTS_PER_EVENT: usize = 500;

/// A message that can never be processed: kept, reported, and out of the way of the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MessageParked {
    pub service: String,
    pub subject: String,
    pub stream_sequence: u64,
    pub delivered: u64,
    pub reason: String,
    /// The original bytes, lossily as text (they may not be UTF-8).
    pub payload: String,
    /// The original `Huiqi-Signature` header, kept so that `huiqi parked --republish` sends
    /// the message back exactly as it came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// A logged event the relay could not publish (bigger than the server's `max_payload`): the
/// relay records this and moves on, so one oversized event never blocks the ones behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EventUnpublishable {
    pub service: String,
    pub log_sequence: u64,
    pub event_id: String,
    pub event_type: String,
    pub subject: String,
    pub publish_subject: String,
    pub bytes: u64,
    pub limit: u64,
    pub reason: String,
}

/// An operator told a service to skip a log record it could not read at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RecordSkipped {
    pub service: String,
    pub log_sequence: u64,
    pub reason: String,
}

/// What a decision in a split deployment met in the cross-partition counts (huiqi_bus::reserve):
/// counts of claims in other partitions — a person already paid under the measure elsewhere —
/// that it counts as theirs. Logged (and published on `huiqi.internal.award.counted`) right
/// before the decision, so every fold — start-up, replay, a rebuilt log — adds them to the
/// history exactly where the live decision saw them, without the bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CountedElsewhere {
    /// The claim being decided.
    pub claim_id: String,
    pub counts: Vec<ForeignCount>,
}

/// One count of another partition's claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ForeignCount {
    /// The claim whose decision counts it.
    pub claim_id: String,
    pub applicant_uscc: String,
    pub count: crate::history::Count,
}

/// `huiqi.awards.supplemented.<measure>` data: claim `claim_id`, decided under
/// `replaces_version` for `replaces_total`, decided again under `policy_version` for `total`;
/// `amount` (the difference, positive) is paid once under `award_id` (`A-<claim uuid>-S-<8 hex
/// of the version>`). The lines and rules are the new decision's; `counts` replace
/// `replaces_counts` in the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AwardSupplement {
    pub claim_id: String,
    pub application_id: String,
    pub measure: String,
    pub applicant_uscc: String,
    pub award_id: String,
    pub policy_version: String,
    pub policy_hash: String,
    pub replaces_version: String,
    pub replaces_total: Money,
    pub total: Money,
    pub amount: Money,
    pub lines: Vec<AwardLine>,
    pub rules: std::collections::BTreeMap<String, String>,
    pub facts_digest: String,
    pub counts: Vec<crate::history::Count>,
    pub replaces_counts: Vec<crate::history::Count>,
}

/// The award id of claim `claim_id`'s supplement under policy version `version`.
pub fn supplement_award_id(claim_id: &str, version: &str) -> String {
    use sha2::{Digest, Sha256};
    let h: String = Sha256::digest(version.as_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("A-{}-S-{h}", claim_id.trim_start_matches("C-"))
}

/// `huiqi.log.head.v1` data: a service's log head when it was anchored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LogHead {
    pub service: String,
    pub log_sequence: u64,
    /// The chain hash of record `log_sequence` (hex).
    pub head_hash: String,
}

// ---------------------------------------------------------------------------------------------
// Treasury
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TreasuryPay {
    pub award_id: String,
    pub payee_uscc: String,
    pub bank_account: String,
    pub amount: Money,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TreasuryStatus {
    Settled,
    Refused,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TreasuryReply {
    pub status: TreasuryStatus,
    #[serde(default)]
    pub bank_reference: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Check replies (CONTRACT.md, "System → check providers")
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EnterpriseReply {
    pub found: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_district: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_district: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub independent_legal_person: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub industry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foreign_trade: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ApplicantKind>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Enrolment {
    pub date: NaiveDate,
    pub employer_uscc: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct InsuredPerson {
    pub id_number: String,
    #[serde(default)]
    pub pension_months_with_applicant: Vec<String>,
    #[serde(default)]
    pub first_lucheng_enrolment: Option<Enrolment>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SocialInsuranceReply {
    pub persons: Vec<InsuredPerson>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PresencePerson {
    pub id_number: String,
    pub stayed_whole_window: bool,
    #[serde(default)]
    pub arrived_on: Option<NaiveDate>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PresenceReply {
    pub persons: Vec<PresencePerson>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Permit {
    pub issuer_code: String,
    pub valid_from: NaiveDate,
    pub valid_to: NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PermitPerson {
    pub id_number: String,
    #[serde(default)]
    pub permit: Option<Permit>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResidencePermitReply {
    pub persons: Vec<PermitPerson>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TelecomNumber {
    pub phone: String,
    pub carrier: String,
    pub city_code: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TelecomReply {
    pub numbers: Vec<TelecomNumber>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StatisticsReply {
    pub above_scale_manufacturing: bool,
    #[serde(default)]
    pub upgraded_2022: bool,
    #[serde(default)]
    pub q1_2023_output: Option<Money>,
    #[serde(default)]
    pub q1_2022_output: Option<Money>,
    #[serde(default)]
    pub y2022_output: Option<Money>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Crossing {
    pub exit_date: NaiveDate,
    #[serde(default)]
    pub entry_date: Option<NaiveDate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TravellerRecord {
    pub id_number: String,
    #[serde(default)]
    pub trips: Vec<Crossing>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExitEntryReply {
    pub persons: Vec<TravellerRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PriorPayment {
    pub item: String,
    #[serde(default)]
    pub person: Option<String>,
    pub amount: Money,
    pub policy: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PriorBenefitsReply {
    pub payments: Vec<PriorPayment>,
}

/// Every check reply a claim gathered, keyed by check name as in the `huiqi evaluate` facts file.
/// A check that was not part of the measure's plan is absent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Facts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enterprise: Option<EnterpriseReply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub social_insurance: Option<SocialInsuranceReply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<PresenceReply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residence_permit: Option<ResidencePermitReply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telecom: Option<TelecomReply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistics: Option<StatisticsReply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_entry: Option<ExitEntryReply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_benefits: Option<PriorBenefitsReply>,
}

// ---------------------------------------------------------------------------------------------
// Award (award → bureau systems)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AwardStatus {
    Approved,
    Rejected,
}

/// One line of a decision: what, for whom, how much, whether paid, why, and by which rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AwardLine {
    pub item: String,
    pub person: Option<String>,
    pub amount: Money,
    pub paid: bool,
    pub reason: String,
    pub rule: String,
}

/// `huiqi.awards.approved.<measure>` / `huiqi.awards.rejected.<measure>` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AwardDecision {
    pub claim_id: String,
    pub application_id: String,
    pub measure: String,
    pub applicant_uscc: String,
    pub policy_version: String,
    /// SHA-256 of the policy parameter file the decision was made under.
    pub policy_hash: String,
    pub status: AwardStatus,
    pub total: Money,
    pub lines: Vec<AwardLine>,
    /// SHA-256 (hex) of the checked facts the decision used ([`Facts::digest`]); the facts
    /// themselves stay in the award log, where the audit tools show them (CONTRACT.md).
    pub facts_digest: String,
    /// The ids of the check-record events that carried those facts, by check and chunk.
    #[serde(default)]
    pub check_records: Vec<String>,
    /// The source sentence of every rule code the lines cite.
    pub rules: std::collections::BTreeMap<String, String>,
    /// What this decision counts against later claims (caps, one per person, cumulative
    /// thresholds, prior payments offset), typed.
    #[serde(default)]
    pub counts: Vec<crate::history::Count>,
    /// The earlier counts this decision relied on, and what each did to it.
    #[serde(default)]
    pub relied_on: Vec<crate::history::Relied>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::Check;
    use crate::envelope::Data;

    #[test]
    fn a_verified_claim_written_from_logged_records_is_the_typed_one_to_the_byte() {
        let application: Application = serde_json::from_value(serde_json::json!({
            "application_id": "P-1", "measure": "M1",
            "submitted_at": "2023-02-10T09:30:00+08:00",
            "applicant": {"uscc": "91330302000001015N", "name": "甲", "kind": "enterprise",
                          "street": "x", "bank_account": "62220000"},
            "employees": [{"id_number": "330302199001011234", "name": "张\"三", "phone": "13800000000"}]
        }))
        .unwrap();
        let record = |check: Check, reply: &str, chunk| CheckRecorded {
            claim_id: "C-1".into(),
            chunk,
            chunks: 2,
            attempts: 1,
            reply: check.read_reply(reply.as_bytes()).unwrap(),
        };
        let records = [
            record(
                Check::Presence,
                r#"{"persons":[{"id_number":"330302199001011234","stayed_whole_window":true}]}"#,
                0,
            ),
            record(
                Check::Telecom,
                r#"{"numbers":[{"phone":"13800000000","carrier":"mobile","city_code":"0577"}]}"#,
                1,
            ),
        ];
        let checks: std::collections::BTreeMap<Check, u32> =
            [(Check::Presence, 2), (Check::Telecom, 2)].into();
        let typed = ClaimVerified {
            claim_id: "C-1".into(),
            application: application.clone(),
            checks: checks.clone(),
            records: records
                .iter()
                .enumerate()
                .map(|(i, r)| EmbeddedRecord {
                    event_id: format!("E-{i}"),
                    record: r.clone(),
                })
                .collect(),
        };
        // What verification logged for each record: the event's data.
        let logged: Vec<(String, Data)> = records
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("E-{i}"), Data::from_value(r).unwrap()))
            .collect();
        let embedded: Vec<EmbeddedOut> = logged
            .iter()
            .map(|(event_id, record)| EmbeddedOut { event_id, record })
            .collect();
        let out = ClaimVerifiedOut {
            claim_id: "C-1",
            application: &application,
            checks: &checks,
            records: &embedded,
        };
        let bytes = serde_json::to_string(&out).unwrap();
        assert_eq!(bytes, serde_json::to_string(&typed).unwrap());
        assert_eq!(
            serde_json::from_str::<ClaimVerified>(&bytes).unwrap(),
            typed
        );
        // No records (a large roster's, published on their own): the field is left out, as
        // the typed one leaves it out.
        let bare = ClaimVerifiedOut {
            records: &[],
            ..out
        };
        let typed_bare = ClaimVerified {
            records: vec![],
            ..typed
        };
        assert_eq!(
            serde_json::to_string(&bare).unwrap(),
            serde_json::to_string(&typed_bare).unwrap()
        );
    }
}
