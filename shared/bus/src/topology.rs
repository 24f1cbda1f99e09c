//! The durable consumers a deployment has, in one place: each service's own (what it reads),
//! and the read-only ones bureau systems pull public events from. `huiqi setup` (an admin)
//! provisions all of them; services only bind to theirs; the permissions in [`crate::access`]
//! and the restore in [`crate::restore`] read the same table.

use crate::consumer::ConsumerSpec;
use huiqi_events::subjects as s;
use huiqi_events::Partition;

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

/// The consumer settings of a service (None for an unknown service), unsplit.
pub fn service_consumer(service: &str) -> Option<ConsumerSpec> {
    service_consumer_in(service, Partition::ONLY)
}

/// Whether a service's work is split into partitions (all but intake: portals publish on one
/// fixed subject, so intake reads one consumer and routes each claim to its partition).
pub fn is_partitioned(service: &str) -> bool {
    matches!(service, "verification" | "award" | "payout")
}

/// The partitions a service runs as in a deployment of `count`: every one for a partitioned
/// service, the one unsplit consumer for intake.
pub fn partitions_of(service: &str, count: u16) -> Vec<Partition> {
    if is_partitioned(service) {
        Partition::all(count).collect()
    } else {
        vec![Partition::ONLY]
    }
}

/// A service's consumer in one partition: `<service>-p<i>` reading only that partition's
/// subjects (`….<i>`); the unsplit consumer for [`Partition::ONLY`] or an unpartitioned service.
pub fn service_consumer_in(service: &str, partition: Partition) -> Option<ConsumerSpec> {
    let (name, filter) = SERVICE_CONSUMERS
        .iter()
        .find(|(name, _)| *name == service)?;
    if !partition.is_split() || !is_partitioned(service) {
        return Some(ConsumerSpec::new(name, filter));
    }
    // Award reads two subjects (facts, verified): one token for the kind, then the partition.
    let filter = match filter.strip_suffix(".>") {
        Some(prefix) => format!("{prefix}.*.{}", partition.index()),
        None => partition.subject(filter),
    };
    Some(ConsumerSpec::new(&partition.durable(name), &filter))
}

/// Every durable name a service's consumers have in a deployment of `count` partitions.
pub fn service_durables(service: &str, count: u16) -> Vec<String> {
    partitions_of(service, count)
        .into_iter()
        .map(|p| p.durable(service))
        .collect()
}

/// Every durable consumer an admin provisions for a deployment of `partitions`.
pub fn all_consumers(partitions: u16) -> Vec<ConsumerSpec> {
    SERVICE_CONSUMERS
        .iter()
        .flat_map(|(name, _)| {
            partitions_of(name, partitions)
                .into_iter()
                .filter_map(|p| service_consumer_in(name, p))
        })
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
    use super::*;

    #[test]
    fn split_consumers_read_only_their_partition() {
        let p1 = Partition::new(1, 2).unwrap();
        let award = service_consumer_in("award", p1).unwrap();
        assert_eq!(award.durable, "award-p1");
        assert!(subject_matches(
            &award.filter,
            &p1.subject(s::CLAIM_VERIFIED)
        ));
        assert!(subject_matches(
            &award.filter,
            &p1.subject(s::FACTS_RECORDED)
        ));
        let p0 = Partition::new(0, 2).unwrap();
        assert!(!subject_matches(
            &award.filter,
            &p0.subject(s::CLAIM_VERIFIED)
        ));
        assert!(!subject_matches(&award.filter, s::CLAIM_VERIFIED));
        let payout = service_consumer_in("payout", p1).unwrap();
        assert_eq!(
            (payout.durable.as_str(), payout.filter.as_str()),
            ("payout-p1", "huiqi.internal.payments.ordered.1")
        );
        // Intake is never split; unsplit names are today's.
        assert_eq!(service_consumer_in("intake", p1).unwrap().durable, "intake");
        assert_eq!(
            service_consumer("award").unwrap().filter,
            s::VERIFICATION_ALL
        );
        let names: Vec<String> = all_consumers(2).into_iter().map(|c| c.durable).collect();
        for n in [
            "intake",
            "verification-p0",
            "verification-p1",
            "award-p0",
            "award-p1",
            "payout-p0",
            "payout-p1",
            "bureau-awards",
        ] {
            assert!(names.contains(&n.to_string()), "{n} in {names:?}");
        }
        assert!(!names.contains(&"award".to_string()));
    }

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
