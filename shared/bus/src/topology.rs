//! The durable consumers a deployment has, in one place: each service's own (what it reads),
//! and the read-only ones bureau systems pull public events from. `huiqi setup` (an admin)
//! provisions all of them; services only bind to theirs; the permissions in [`crate::access`]
//! and the restore in [`crate::restore`] read the same table.

use crate::consumer::ConsumerSpec;
use huiqi_events::subjects as s;

/// Each service's durable consumer: (service = durable name, filter subject).
pub const SERVICE_CONSUMERS: &[(&str, &str)] = &[
    // The contract's subject and the portal-scoped `huiqi.applications.submitted.<portal>`.
    ("intake", "huiqi.applications.>"),
    ("verification", s::CLAIM_OPENED),
    ("award", s::VERIFICATION_ALL),
    ("payout", s::PAYMENT_ORDERED),
];

/// Durable consumers for bureau systems: (durable name, filter subject).
pub const BUREAU_CONSUMERS: &[(&str, &str)] = &[
    ("bureau-awards", "huiqi.awards.>"),
    ("bureau-payouts", "huiqi.payouts.>"),
    ("bureau-entitlements", "huiqi.entitlements.>"),
];

/// The consumer settings of a service (None for an unknown service).
pub fn service_consumer(service: &str) -> Option<ConsumerSpec> {
    SERVICE_CONSUMERS
        .iter()
        .find(|(name, _)| *name == service)
        .map(|(name, filter)| ConsumerSpec::new(name, filter))
}

/// Every durable consumer an admin provisions.
pub fn all_consumers() -> Vec<ConsumerSpec> {
    SERVICE_CONSUMERS
        .iter()
        .map(|(name, filter)| ConsumerSpec::new(name, filter))
        .chain(
            BUREAU_CONSUMERS
                .iter()
                .map(|(name, filter)| reader(ConsumerSpec::new(name, filter))),
        )
        .collect()
}

/// An outside reader's consumer (bureau, portal): redelivered until acked, however often it
/// was fetched before (a reader that crashed five times must not lose an event).
fn reader(mut spec: ConsumerSpec) -> ConsumerSpec {
    spec.max_deliver = -1;
    spec
}

/// The durable consumer of a named portal's answers: `portal-<name>`, its acceptances and
/// rejections only (`huiqi.intake.*.<name>`).
pub fn portal_consumer(portal: &str) -> ConsumerSpec {
    reader(ConsumerSpec::new(
        &crate::access::portal_user(portal),
        &s::portal_reply_filter(portal),
    ))
}

/// Whether `subject` matches a NATS filter (`*` one token, `>` the rest).
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut t = subject.split('.');
    loop {
        match (f.next(), t.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn filters_match_like_nats() {
        assert!(subject_matches(
            "huiqi.internal.verification.>",
            "huiqi.internal.verification.facts"
        ));
        assert!(!subject_matches(
            "huiqi.internal.verification.>",
            "huiqi.internal.verification"
        ));
        assert!(subject_matches(
            "huiqi.awards.*.M1",
            "huiqi.awards.approved.M1"
        ));
        assert!(!subject_matches(
            "huiqi.awards.*",
            "huiqi.awards.approved.M1"
        ));
        assert!(subject_matches("a.b", "a.b"));
    }
}
