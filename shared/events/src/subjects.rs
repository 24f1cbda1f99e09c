//! NATS subjects. The `huiqi.applications`, `huiqi.intake`, `huiqi.awards`, `huiqi.payouts`,
//! `huiqi.entitlements`, `huiqi.checks`, `huiqi.treasury` and `huiqi.query` names are fixed by
//! CONTRACT.md; `huiqi.internal.*` and `huiqi.parked.*` are the project's own.

pub const APPLICATIONS_SUBMITTED: &str = "huiqi.applications.submitted";
pub const INTAKE_ACCEPTED: &str = "huiqi.intake.accepted";
pub const INTAKE_REJECTED: &str = "huiqi.intake.rejected";
/// Portal-scoped form (the project's addition): a portal named `p` publishes on
/// `huiqi.applications.submitted.p` and is answered on `huiqi.intake.accepted.p` and
/// `huiqi.intake.rejected.p`, which its durable consumer `portal-p` reads.
pub const PORTAL_APPLICATIONS: &str = "huiqi.applications.submitted.*";
pub const AWARDS_APPROVED_PREFIX: &str = "huiqi.awards.approved";
pub const AWARDS_REJECTED_PREFIX: &str = "huiqi.awards.rejected";
/// Supplementary awards: `huiqi.awards.supplemented.<measure>` (bureaus get them with
/// `huiqi.awards.>`).
pub const AWARDS_SUPPLEMENTED_PREFIX: &str = "huiqi.awards.supplemented";
pub const PAYOUTS_SETTLED: &str = "huiqi.payouts.settled";
pub const PAYOUTS_FAILED: &str = "huiqi.payouts.failed";
pub const ENTITLEMENT_DATA_PACKAGE: &str = "huiqi.entitlements.data_package";
pub const ENTITLEMENT_RESIDENT_POINTS: &str = "huiqi.entitlements.resident_points";
pub const CHECKS_PREFIX: &str = "huiqi.checks";
pub const TREASURY_PAY: &str = "huiqi.treasury.pay";
pub const QUERY_CLAIM: &str = "huiqi.query.claim";

/// Intake → verification: a claim was opened for an accepted application.
pub const CLAIM_OPENED: &str = "huiqi.internal.claims.opened";
/// Verification → award: one check reply (one chunk of a batched check), as recorded.
pub const FACTS_RECORDED: &str = "huiqi.internal.verification.facts";
/// Verification → award: every planned check has a recorded answer.
pub const CLAIM_VERIFIED: &str = "huiqi.internal.verification.verified";
/// What the award service consumes: facts, then the verified marker, in stream order.
pub const VERIFICATION_ALL: &str = "huiqi.internal.verification.>";
/// Award, split: counts of other partitions' claims a decision met (nobody consumes it: it is
/// on the stream so a rebuilt award log has it).
pub const COUNTED_ELSEWHERE: &str = "huiqi.internal.award.counted";
/// Award → payout: an approved award must be paid (carries the bank account).
pub const PAYMENT_ORDERED: &str = "huiqi.internal.payments.ordered";
/// Poison messages, one subject per consuming service: `huiqi.parked.<service>`.
pub const PARKED_PREFIX: &str = "huiqi.parked";
/// Anchored log heads, one subject per service: `huiqi.heads.<service>`.
pub const HEADS_PREFIX: &str = "huiqi.heads";

/// Subjects captured by the single `HUIQI` JetStream stream. Request/reply subjects (checks,
/// treasury, query) are deliberately not captured: JetStream would answer them with a PubAck.
pub const STREAM_SUBJECTS: &[&str] = &[
    APPLICATIONS_SUBMITTED,
    PORTAL_APPLICATIONS,
    "huiqi.intake.>",
    "huiqi.awards.>",
    "huiqi.payouts.>",
    "huiqi.entitlements.>",
    "huiqi.internal.>",
    "huiqi.parked.>",
    "huiqi.heads.>",
];

pub fn award_subject(approved: bool, measure: &str) -> String {
    let prefix = if approved {
        AWARDS_APPROVED_PREFIX
    } else {
        AWARDS_REJECTED_PREFIX
    };
    format!("{prefix}.{measure}")
}

pub fn check_subject(check: &str) -> String {
    format!("{CHECKS_PREFIX}.{check}")
}

pub fn heads_subject(service: &str) -> String {
    format!("{HEADS_PREFIX}.{service}")
}

pub fn parked_subject(service: &str) -> String {
    format!("{PARKED_PREFIX}.{service}")
}

/// A portal name fit for a subject token and a NATS user: 1–32 of `a-z 0-9 -`.
pub fn valid_portal(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Where portal `p` publishes its applications.
pub fn portal_submit_subject(portal: &str) -> String {
    format!("{APPLICATIONS_SUBMITTED}.{portal}")
}

/// The filter of portal `p`'s reply consumer: its acceptances and rejections.
pub fn portal_reply_filter(portal: &str) -> String {
    format!("huiqi.intake.*.{portal}")
}
