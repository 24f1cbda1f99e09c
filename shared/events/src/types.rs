//! CloudEvents `type` values. The suffix is the schema version; a reader upcasts older versions
//! with [`upcast`] before decoding, so a replay of an old log still decodes.

use crate::envelope::{Envelope, EnvelopeError};

pub const APPLICATION_SUBMITTED: &str = "huiqi.application.submitted.v1";
pub const INTAKE_ACCEPTED: &str = "huiqi.intake.accepted.v1";
pub const INTAKE_REJECTED: &str = "huiqi.intake.rejected.v1";
pub const CLAIM_OPENED: &str = "huiqi.claim.opened.v1";
pub const CHECK_RECORDED: &str = "huiqi.check.recorded.v1";
pub const CLAIM_VERIFIED: &str = "huiqi.claim.verified.v1";
pub const AWARD_DECIDED: &str = "huiqi.award.decided.v1";
pub const PAYMENT_ORDERED: &str = "huiqi.payment.ordered.v1";
pub const PAYMENT_ATTEMPTED: &str = "huiqi.payment.attempted.v1";
pub const PAYOUT_SETTLED: &str = "huiqi.payout.settled.v1";
pub const PAYOUT_FAILED: &str = "huiqi.payout.failed.v1";
pub const ENTITLEMENT_DATA_PACKAGE: &str = "huiqi.entitlement.data_package.v1";
pub const ENTITLEMENT_RESIDENT_POINTS: &str = "huiqi.entitlement.resident_points.v1";
pub const MESSAGE_PARKED: &str = "huiqi.message.parked.v1";
/// A logged event that could not be published (larger than the server allows): recorded and
/// reported instead of blocking the relay.
pub const EVENT_UNPUBLISHABLE: &str = "huiqi.event.unpublishable.v1";
/// An operator skipped a log record the service could not read at start (`--skip-record`).
pub const RECORD_SKIPPED: &str = "huiqi.record.skipped.v1";

/// Every type this build understands, at its current version.
pub const CURRENT: &[&str] = &[
    APPLICATION_SUBMITTED,
    INTAKE_ACCEPTED,
    INTAKE_REJECTED,
    CLAIM_OPENED,
    CHECK_RECORDED,
    CLAIM_VERIFIED,
    AWARD_DECIDED,
    PAYMENT_ORDERED,
    PAYMENT_ATTEMPTED,
    PAYOUT_SETTLED,
    PAYOUT_FAILED,
    ENTITLEMENT_DATA_PACKAGE,
    ENTITLEMENT_RESIDENT_POINTS,
    MESSAGE_PARKED,
    EVENT_UNPUBLISHABLE,
    RECORD_SKIPPED,
];

/// Which service may produce which event types (CONTRACT.md, "Signed events"): the default
/// trust file gives each service's key exactly these types. Every service may park messages
/// and report events it cannot publish.
pub const PRODUCERS: &[(&str, &[&str])] = &[
    (
        "intake",
        &[
            INTAKE_ACCEPTED,
            INTAKE_REJECTED,
            CLAIM_OPENED,
            MESSAGE_PARKED,
            EVENT_UNPUBLISHABLE,
        ],
    ),
    (
        "verification",
        &[
            CHECK_RECORDED,
            CLAIM_VERIFIED,
            MESSAGE_PARKED,
            EVENT_UNPUBLISHABLE,
        ],
    ),
    (
        "award",
        &[
            AWARD_DECIDED,
            PAYMENT_ORDERED,
            ENTITLEMENT_DATA_PACKAGE,
            ENTITLEMENT_RESIDENT_POINTS,
            MESSAGE_PARKED,
            EVENT_UNPUBLISHABLE,
        ],
    ),
    (
        "payout",
        &[
            PAYMENT_ATTEMPTED,
            PAYOUT_SETTLED,
            PAYOUT_FAILED,
            MESSAGE_PARKED,
            EVENT_UNPUBLISHABLE,
        ],
    ),
];

/// The event types `service` may produce (empty for an unknown service).
pub fn produced_by(service: &str) -> &'static [&'static str] {
    PRODUCERS
        .iter()
        .find(|(s, _)| *s == service)
        .map(|(_, t)| *t)
        .unwrap_or(&[])
}

/// Splits `huiqi.claim.opened.v1` into (`huiqi.claim.opened`, 1).
pub fn split_version(ty: &str) -> Option<(&str, u32)> {
    let (name, v) = ty.rsplit_once(".v")?;
    Some((name, v.parse().ok()?))
}

/// Brings an envelope of an older schema version up to the current one.
///
/// Every type is at v1 today, so the table of upcasters is empty; the function still refuses a
/// version newer than this build knows (a replay with an old binary must not misread new data)
/// and an unknown type. When a v2 appears, its v1 → v2 step goes in the match below.
pub fn upcast(env: Envelope) -> Result<Envelope, EnvelopeError> {
    if CURRENT.contains(&env.ty.as_str()) {
        return Ok(env);
    }
    let (name, version) =
        split_version(&env.ty).ok_or_else(|| EnvelopeError::UnknownType(env.ty.clone()))?;
    let current = CURRENT
        .iter()
        .filter_map(|t| split_version(t))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v);
    match current {
        Some(cur) if version > cur => Err(EnvelopeError::NewerVersion {
            ty: env.ty.clone(),
            known: cur,
        }),
        _ => Err(EnvelopeError::UnknownType(env.ty.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_split_and_newer_is_refused() {
        assert_eq!(split_version(CLAIM_OPENED), Some(("huiqi.claim.opened", 1)));
        let env = Envelope::new("t", "huiqi.claim.opened.v9", "c", &serde_json::json!({})).unwrap();
        assert!(matches!(
            upcast(env),
            Err(EnvelopeError::NewerVersion { known: 1, .. })
        ));
        let env = Envelope::new("t", CLAIM_OPENED, "c", &serde_json::json!({})).unwrap();
        assert!(upcast(env).is_ok());
    }
}
