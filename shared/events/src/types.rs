//! CloudEvents `type` values. The suffix is the schema version; a reader upcasts older versions
//! with [`upcast`] before decoding, so a replay of an old log still decodes.

use crate::envelope::{Data, Envelope, EnvelopeError};

pub const APPLICATION_SUBMITTED: &str = "huiqi.application.submitted.v1";
pub const INTAKE_ACCEPTED: &str = "huiqi.intake.accepted.v1";
pub const INTAKE_REJECTED: &str = "huiqi.intake.rejected.v1";
pub const CLAIM_OPENED: &str = "huiqi.claim.opened.v1";
pub const CHECK_RECORDED: &str = "huiqi.check.recorded.v1";
pub const CLAIM_VERIFIED: &str = "huiqi.claim.verified.v1";
pub const AWARD_DECIDED: &str = "huiqi.award.decided.v1";
/// A supplementary award: a decided claim re-decided under a later policy version (an operator's
/// `huiqi supplement`), paying the difference once under its own award id.
pub const AWARD_SUPPLEMENTED: &str = "huiqi.award.supplemented.v1";
pub const PAYMENT_ORDERED: &str = "huiqi.payment.ordered.v1";
/// Split deployments: counts of other partitions' claims a decision met (payloads::CountedElsewhere).
pub const COUNTED_ELSEWHERE: &str = "huiqi.award.counted_elsewhere.v1";
pub const PAYMENT_ATTEMPTED: &str = "huiqi.payment.attempted.v1";
pub const PAYOUT_SETTLED: &str = "huiqi.payout.settled.v1";
pub const PAYOUT_FAILED: &str = "huiqi.payout.failed.v1";
/// v2 (2026-11-27): one event per claim and carrier with a list of grants; v1 named one number.
pub const ENTITLEMENT_DATA_PACKAGE: &str = "huiqi.entitlement.data_package.v2";
/// v2 (2026-11-27): one event per claim with a list of grants; v1 named one person.
pub const ENTITLEMENT_RESIDENT_POINTS: &str = "huiqi.entitlement.resident_points.v2";
pub const MESSAGE_PARKED: &str = "huiqi.message.parked.v1";
/// A logged event that could not be published (larger than the server allows): recorded and
/// reported instead of blocking the relay.
pub const EVENT_UNPUBLISHABLE: &str = "huiqi.event.unpublishable.v1";
/// An operator skipped a log record the service could not read at start (`--skip-record`).
pub const RECORD_SKIPPED: &str = "huiqi.record.skipped.v1";
/// A service's log head (sequence and chain hash), published now and then so a rewrite of the
/// log on one disk is detected against the stream's copy (`huiqi audit heads`).
pub const LOG_HEAD: &str = "huiqi.log.head.v1";

/// Every type this build understands, at its current version.
pub const CURRENT: &[&str] = &[
    APPLICATION_SUBMITTED,
    INTAKE_ACCEPTED,
    INTAKE_REJECTED,
    CLAIM_OPENED,
    CHECK_RECORDED,
    CLAIM_VERIFIED,
    AWARD_DECIDED,
    AWARD_SUPPLEMENTED,
    COUNTED_ELSEWHERE,
    PAYMENT_ORDERED,
    PAYMENT_ATTEMPTED,
    PAYOUT_SETTLED,
    PAYOUT_FAILED,
    ENTITLEMENT_DATA_PACKAGE,
    ENTITLEMENT_RESIDENT_POINTS,
    MESSAGE_PARKED,
    EVENT_UNPUBLISHABLE,
    RECORD_SKIPPED,
    LOG_HEAD,
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
            LOG_HEAD,
        ],
    ),
    (
        "verification",
        &[
            CHECK_RECORDED,
            CLAIM_VERIFIED,
            MESSAGE_PARKED,
            EVENT_UNPUBLISHABLE,
            LOG_HEAD,
        ],
    ),
    (
        "award",
        &[
            AWARD_DECIDED,
            AWARD_SUPPLEMENTED,
            COUNTED_ELSEWHERE,
            PAYMENT_ORDERED,
            ENTITLEMENT_DATA_PACKAGE,
            ENTITLEMENT_RESIDENT_POINTS,
            MESSAGE_PARKED,
            EVENT_UNPUBLISHABLE,
            LOG_HEAD,
        ],
    ),
    (
        "payout",
        &[
            PAYOUT_SETTLED,
            PAYOUT_FAILED,
            MESSAGE_PARKED,
            EVENT_UNPUBLISHABLE,
            LOG_HEAD,
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

/// Brings an envelope of an older schema version up to the current one, so a replay of an old
/// log decodes with today's types. The upcasters:
/// - `huiqi.entitlement.data_package.v1` `{claim_id, phone, carrier, gigabytes}` →
///   v2 `{claim_id, award_id, grants: [{phone, carrier, gigabytes}]}`;
/// - `huiqi.entitlement.resident_points.v1` `{claim_id, id_number, points}` →
///   v2 `{claim_id, award_id, grants: [{id_number, points}]}`.
///
/// (The award id of a claim is `A-` + the claim's UUID, so v1 events, which did not carry it,
/// gain the same one the decision's payment order names.) A version newer than this build
/// knows, and an unknown type, are refused: a replay with an old binary must not misread new
/// data.
pub fn upcast(mut env: Envelope) -> Result<Envelope, EnvelopeError> {
    if CURRENT.contains(&env.ty.as_str()) {
        return Ok(env);
    }
    let award_id = |d: &serde_json::Value| {
        let claim = d["claim_id"].as_str().unwrap_or("");
        format!("A-{}", claim.trim_start_matches("C-"))
    };
    let field = |d: &serde_json::Value, k: &'static str| {
        d.get(k).cloned().ok_or_else(|| EnvelopeError::Field {
            field: k,
            message: format!("v1 entitlement data has no `{k}`"),
        })
    };
    match env.ty.as_str() {
        "huiqi.entitlement.data_package.v1" => {
            let d = &env.data.value();
            env.data = Data::from_value(&serde_json::json!({
                "claim_id": field(d, "claim_id")?,
                "award_id": award_id(d),
                "grants": [{
                    "phone": field(d, "phone")?,
                    "carrier": field(d, "carrier")?,
                    "gigabytes": field(d, "gigabytes")?,
                }],
            }))?;
            env.ty = ENTITLEMENT_DATA_PACKAGE.to_string();
            return Ok(env);
        }
        "huiqi.entitlement.resident_points.v1" => {
            let d = &env.data.value();
            env.data = Data::from_value(&serde_json::json!({
                "claim_id": field(d, "claim_id")?,
                "award_id": award_id(d),
                "grants": [{
                    "id_number": field(d, "id_number")?,
                    "points": field(d, "points")?,
                }],
            }))?;
            env.ty = ENTITLEMENT_RESIDENT_POINTS.to_string();
            return Ok(env);
        }
        _ => {}
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
    fn v1_entitlements_upcast_to_the_batched_v2() {
        use crate::payloads::{DataPackageEntitlement, ResidentPointsEntitlement};
        let v1 = Envelope::new(
            "award",
            "huiqi.entitlement.data_package.v1",
            "C-1",
            &serde_json::json!({ "claim_id": "C-1", "phone": "13900000001", "carrier": "mobile", "gigabytes": 20 }),
        )
        .unwrap();
        let v2 = upcast(v1).unwrap();
        assert_eq!(v2.ty, ENTITLEMENT_DATA_PACKAGE);
        let d: DataPackageEntitlement = v2.data_as().unwrap();
        assert_eq!((d.award_id.as_str(), d.grants.len()), ("A-1", 1));
        assert_eq!(d.grants[0].phone, "13900000001");
        let v1 = Envelope::new(
            "award",
            "huiqi.entitlement.resident_points.v1",
            "C-1",
            &serde_json::json!({ "claim_id": "C-1", "id_number": "x", "points": 5 }),
        )
        .unwrap();
        let d: ResidentPointsEntitlement = upcast(v1).unwrap().data_as().unwrap();
        assert_eq!(
            (d.grants[0].id_number.as_str(), d.grants[0].points),
            ("x", 5)
        );
        let broken = Envelope::new(
            "award",
            "huiqi.entitlement.resident_points.v1",
            "C-1",
            &serde_json::json!({ "claim_id": "C-1" }),
        )
        .unwrap();
        assert!(upcast(broken)
            .unwrap_err()
            .to_string()
            .contains("id_number"));
    }

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
