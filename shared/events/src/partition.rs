//! Partitions: the work of the claim-processing services (verification, award, payout) split
//! by applicant into N parts, each with its own durable consumer, lease, log and internal
//! subjects, so several workers (in one process or several) decide in parallel while each
//! applicant's claims stay in one partition, in stream order (docs/SCALING.md).
//!
//! N = 1 (the default) is today's deployment unchanged: no subject token, no `-p<i>` in
//! consumer names, no `p<i>` directory. Intake is never split (portals publish on one fixed
//! subject): it routes each opened claim to its applicant's partition.

use std::path::{Path, PathBuf};

/// The most partitions a deployment may have (each is a consumer per service in the server's
/// permissions and a connection per service).
pub const MAX_PARTITIONS: u16 = 64;

/// One partition of a deployment of `count` partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Partition {
    index: u16,
    count: u16,
}

impl Default for Partition {
    fn default() -> Self {
        Partition::ONLY
    }
}

impl Partition {
    /// The one partition of an unsplit deployment.
    pub const ONLY: Partition = Partition { index: 0, count: 1 };

    /// Partition `index` of `count`; the error names the rule broken.
    pub fn new(index: u16, count: u16) -> Result<Partition, String> {
        check_count(count)?;
        if index >= count {
            return Err(format!(
                "partition {index} does not exist: partitions are numbered 0..{count}"
            ));
        }
        Ok(Partition { index, count })
    }

    /// Every partition of a deployment of `count` (already checked with [`check_count`]).
    pub fn all(count: u16) -> impl Iterator<Item = Partition> {
        let count = count.clamp(1, MAX_PARTITIONS);
        (0..count).map(move |index| Partition { index, count })
    }

    /// The partition of an applicant (its unified social credit code): FNV-1a of the code's
    /// bytes, modulo `count`. Fixed forever for a given count: every claim of one applicant
    /// lands in one partition, so the per-enterprise rules stay inside one fold.
    pub fn of_applicant(uscc: &str, count: u16) -> Partition {
        let count = count.clamp(1, MAX_PARTITIONS);
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in uscc.trim().as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Partition {
            index: (h % u64::from(count)) as u16,
            count,
        }
    }

    pub fn index(&self) -> u16 {
        self.index
    }

    pub fn count(&self) -> u16 {
        self.count
    }

    /// Whether the deployment is split (N > 1).
    pub fn is_split(&self) -> bool {
        self.count > 1
    }

    /// An internal subject in this partition: `base` unsplit, `base.<index>` split.
    pub fn subject(&self, base: &str) -> String {
        if self.is_split() {
            format!("{base}.{}", self.index)
        } else {
            base.to_string()
        }
    }

    /// A service's durable consumer in this partition: `<service>` unsplit,
    /// `<service>-p<index>` split.
    pub fn durable(&self, service: &str) -> String {
        if self.is_split() {
            format!("{service}-p{}", self.index)
        } else {
            service.to_string()
        }
    }

    /// A service's log directory in this partition: `base` unsplit, `base/p<index>` split.
    pub fn dir(&self, base: &Path) -> PathBuf {
        if self.is_split() {
            base.join(format!("p{}", self.index))
        } else {
            base.to_path_buf()
        }
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Whether `count` partitions are allowed (1..=[`MAX_PARTITIONS`]).
pub fn check_count(count: u16) -> Result<(), String> {
    if (1..=MAX_PARTITIONS).contains(&count) {
        Ok(())
    } else {
        Err(format!(
            "partitions must be 1..={MAX_PARTITIONS}, got {count}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsplit_changes_no_name() {
        let p = Partition::ONLY;
        assert_eq!(
            p.subject("huiqi.internal.claims.opened"),
            "huiqi.internal.claims.opened"
        );
        assert_eq!(p.durable("award"), "award");
        assert_eq!(p.dir(Path::new("/d/award")), PathBuf::from("/d/award"));
        assert_eq!(
            Partition::of_applicant("91330302MA2XXXXX1A", 1),
            Partition::ONLY
        );
    }

    #[test]
    fn split_names_carry_the_index() {
        let p = Partition::new(3, 4).unwrap();
        assert_eq!(
            p.subject("huiqi.internal.payments.ordered"),
            "huiqi.internal.payments.ordered.3"
        );
        assert_eq!(p.durable("award"), "award-p3");
        assert_eq!(p.dir(Path::new("/d/award")), PathBuf::from("/d/award/p3"));
        assert!(Partition::new(4, 4).unwrap_err().contains("0..4"));
        assert!(check_count(0).is_err() && check_count(MAX_PARTITIONS + 1).is_err());
    }

    #[test]
    fn applicants_spread_and_stay_put() {
        // FNV-1a is fixed: the same code lands in the same partition on every machine.
        let a = Partition::of_applicant("91330302MA2AAAAA1X", 2);
        assert_eq!(a, Partition::of_applicant(" 91330302MA2AAAAA1X ", 2));
        let mut seen = [0usize; 4];
        for i in 0..4000 {
            seen[Partition::of_applicant(&format!("9133030{i:011}"), 4).index() as usize] += 1;
        }
        assert!(seen.iter().all(|n| (800..1200).contains(n)), "{seen:?}");
    }
}
