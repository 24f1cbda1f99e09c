//! Huiqi's reading of the Lucheng District 2023 "retain employees, stabilise production" policy.
//!
//! Why a crate of its own, with no I/O in the decisions: a decision must be reproducible to the
//! fen when an auditor replays the events years later. So everything a decision depends on is
//! an argument — the application, the checked facts, the [`History`] of earlier counts, and a
//! [`Policy`] version whose parameters are data — and nothing else: no clock, no environment,
//! no hash-map iteration order (only `BTreeMap`/`Vec` reach the output).
//!
//! Each claimable measure is one [`Measure`] in [`measures`]: which application lists it
//! uses, which checks it needs, how it decides, what it counts in the history. Intake's
//! validation, verification's plan and award's decisions all read that one registry.
//! [`terms`] holds the definitions shared by several measures and the supplementary rules.
//!
//! Versions: the built-in version carries only figures the source states (POLICY.md ruling 2).
//! Operators load further versions from a directory ([`PolicySet::load`]): strictly parsed,
//! each decision records the version and its file's SHA-256, and a set whose versions overlap
//! in time is refused.

pub mod history;
pub mod measures;
pub mod params;
pub mod rules;
pub mod terms;

pub use history::History;
pub use measures::{Measure, MEASURES};
pub use params::Params;

use chrono::NaiveDate;
use huiqi_events::payloads::{Application, AwardDecision, Facts};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Errors loading policy versions.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy file {name}: {source}")]
    Parse {
        name: String,
        source: serde_json::Error,
    },
    #[error("policy directory {dir}: {message}")]
    Dir { dir: String, message: String },
    #[error("policy versions {a} ({a_from} to {a_to}) and {b} ({b_from} to {b_to}) overlap in time: each date must have one version in force")]
    Overlap {
        a: String,
        a_from: NaiveDate,
        a_to: String,
        b: String,
        b_from: NaiveDate,
        b_to: String,
    },
    #[error("policy version `{0}` is defined twice ({1})")]
    Duplicate(String, String),
    #[error("policy version `{version}` supersedes `{missing}`, which is not loaded")]
    UnknownSuperseded { version: String, missing: String },
    #[error("policy file {name}: {message}")]
    Invalid { name: String, message: String },
    #[error("unknown policy version `{0}` (known: {1})")]
    UnknownVersion(String, String),
    #[error("no policy version is in force on {0}")]
    NotInForce(NaiveDate),
}

/// One version of the policy: its parameters, the SHA-256 of the file they came from, and
/// where that file is (`builtin:<name>` or a path).
#[derive(Debug, Clone)]
pub struct Policy {
    pub params: Params,
    pub hash: String,
    pub origin: String,
}

impl Policy {
    /// Parses a parameter file strictly (unknown or missing keys are errors).
    pub fn from_json(name: &str, text: &str) -> Result<Self, PolicyError> {
        let params: Params = serde_json::from_str(text).map_err(|source| PolicyError::Parse {
            name: name.to_string(),
            source,
        })?;
        if let Some(to) = params.effective_to {
            if to < params.effective_from {
                return Err(PolicyError::Invalid {
                    name: name.to_string(),
                    message: format!(
                        "effective_to {to} is before effective_from {}",
                        params.effective_from
                    ),
                });
            }
        }
        let hash = Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Policy {
            params,
            hash,
            origin: name.to_string(),
        })
    }

    pub fn version(&self) -> &str {
        &self.params.version
    }
}

/// The parameter files shipped with this build: only figures the source states.
const BUILTIN: &[(&str, &str)] = &[(
    "builtin:lucheng-2023.1.json",
    include_str!("../versions/lucheng-2023.1.json"),
)];

/// Every known version, ordered by the date it takes effect.
#[derive(Debug, Clone)]
pub struct PolicySet {
    versions: Vec<Policy>,
}

impl PolicySet {
    /// The versions embedded in this build.
    pub fn builtin() -> Self {
        Self::from_policies(
            BUILTIN
                .iter()
                .map(|(name, text)| Policy::from_json(name, text).expect("embedded policy parses"))
                .collect(),
        )
        .expect("the built-in versions are consistent")
    }

    /// The built-in versions plus every `*.json` file in `dir` (operator-loaded versions).
    /// Refused when a file does not parse strictly, a version name repeats, a superseded
    /// version is unknown, or two versions in force overlap in time.
    pub fn load(dir: Option<&Path>) -> Result<Self, PolicyError> {
        let mut versions: Vec<Policy> = Self::builtin().versions;
        if let Some(dir) = dir {
            let err = |message: String| PolicyError::Dir {
                dir: dir.display().to_string(),
                message,
            };
            let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| err(e.to_string()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            files.sort();
            for f in files {
                let text = std::fs::read_to_string(&f)
                    .map_err(|e| err(format!("{}: {e}", f.display())))?;
                versions.push(Policy::from_json(&f.display().to_string(), &text)?);
            }
        }
        Self::from_policies(versions)
    }

    fn from_policies(mut versions: Vec<Policy>) -> Result<Self, PolicyError> {
        versions.sort_by(|a, b| {
            (a.params.effective_from, &a.params.version)
                .cmp(&(b.params.effective_from, &b.params.version))
        });
        for (i, a) in versions.iter().enumerate() {
            if let Some(b) = versions[i + 1..]
                .iter()
                .find(|b| b.params.version == a.params.version)
            {
                return Err(PolicyError::Duplicate(
                    a.params.version.clone(),
                    format!("{} and {}", a.origin, b.origin),
                ));
            }
            for s in &a.params.supersedes {
                if !versions.iter().any(|b| &b.params.version == s) {
                    return Err(PolicyError::UnknownSuperseded {
                        version: a.params.version.clone(),
                        missing: s.clone(),
                    });
                }
            }
        }
        let set = PolicySet { versions };
        // Each version in force covers [effective_from, effective_to or the day before the
        // next one starts]; two that share a day overlap.
        let live = set.live();
        for pair in live.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let shared_start = a.params.effective_from == b.params.effective_from;
            let crosses = a
                .params
                .effective_to
                .is_some_and(|to| to >= b.params.effective_from);
            if shared_start || crosses {
                let show = |p: &Policy| {
                    p.params
                        .effective_to
                        .map(|d| d.to_string())
                        .unwrap_or_else(|| "the next version".into())
                };
                return Err(PolicyError::Overlap {
                    a: a.params.version.clone(),
                    a_from: a.params.effective_from,
                    a_to: show(a),
                    b: b.params.version.clone(),
                    b_from: b.params.effective_from,
                    b_to: show(b),
                });
            }
        }
        Ok(set)
    }

    /// The versions that decide new claims: all but the superseded ones, by start date.
    fn live(&self) -> Vec<&Policy> {
        self.versions
            .iter()
            .filter(|p| {
                !self
                    .versions
                    .iter()
                    .any(|o| o.params.supersedes.contains(&p.params.version))
            })
            .collect()
    }

    /// The version in force on `date`: among those not superseded, the latest that starts on
    /// or before it, unless it ended before it.
    pub fn in_force(&self, date: NaiveDate) -> Result<&Policy, PolicyError> {
        self.live()
            .into_iter()
            .rev()
            .find(|p| p.params.effective_from <= date)
            .filter(|p| p.params.effective_to.is_none_or(|to| date <= to))
            .ok_or(PolicyError::NotInForce(date))
    }

    /// A named version (for replay and `huiqi evaluate --policy-version`), superseded or not.
    pub fn get(&self, version: &str) -> Result<&Policy, PolicyError> {
        self.versions
            .iter()
            .find(|p| p.params.version == version)
            .ok_or_else(|| {
                PolicyError::UnknownVersion(
                    version.to_string(),
                    self.versions
                        .iter()
                        .map(|p| p.params.version.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            })
    }

    /// The version that decides `app`: the one in force on its submission date (Asia/Shanghai).
    pub fn for_application(&self, app: &Application) -> Result<&Policy, PolicyError> {
        self.in_force(terms::shanghai_date(&app.submitted_at))
    }

    /// Every known version, by start date.
    pub fn versions(&self) -> &[Policy] {
        &self.versions
    }

    /// The earliest and latest day of any version's policy period (intake's period check when
    /// no version is in force on a date).
    pub fn first(&self) -> &Policy {
        self.versions
            .first()
            .expect("at least the built-in version")
    }
}

/// A non-cash entitlement the decision grants (M4 data packages, M5 resident points).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entitlement {
    DataPackage {
        person: String,
        phone: String,
        carrier: String,
        gigabytes: u32,
    },
    ResidentPoints {
        person: String,
        points: u32,
    },
}

impl Entitlement {
    /// What granting it counts in the history (a number once, a person once).
    pub fn count(&self) -> huiqi_events::history::Count {
        match self {
            Entitlement::DataPackage { phone, .. } => measures::m4::granted(phone),
            Entitlement::ResidentPoints { person, .. } => measures::m5::granted(person),
        }
    }
}

/// The engine's answer: the award decision (the `data` of the award event) and entitlements.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Evaluation {
    pub decision: AwardDecision,
    pub entitlements: Vec<Entitlement>,
}

/// Decides one claim. Pure: the same arguments give byte-identical output.
pub fn evaluate(
    policy: &Policy,
    claim_id: &str,
    app: &Application,
    facts: &Facts,
    history: &History,
) -> Evaluation {
    measures::evaluate(policy, claim_id, app, facts, history)
}

impl History {
    /// Adds an evaluation's effects: the decision's counts and its entitlements.
    pub fn record(&mut self, e: &Evaluation) {
        let d = &e.decision;
        self.add(&d.claim_id, &d.applicant_uscc, &d.counts);
        let grants: Vec<_> = e.entitlements.iter().map(Entitlement::count).collect();
        self.add(&d.claim_id, &d.applicant_uscc, &grants);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(name: &str, from: &str, to: Option<&str>, supersedes: &[&str]) -> String {
        let base: serde_json::Value =
            serde_json::from_str(include_str!("../versions/lucheng-2023.1.json")).unwrap();
        let mut v = base;
        v["version"] = serde_json::json!(name);
        v["effective_from"] = serde_json::json!(from);
        if let Some(to) = to {
            v["effective_to"] = serde_json::json!(to);
        }
        v["supersedes"] = serde_json::json!(supersedes);
        v["m19"]["a_per_person"] = serde_json::json!("300.00");
        serde_json::to_string_pretty(&v).unwrap()
    }

    fn dir_with(files: &[(&str, String)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(d.path().join(name), text).unwrap();
        }
        d
    }

    #[test]
    fn operator_versions_load_strictly_and_never_overlap() {
        let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        // A later version takes over from its start.
        let d = dir_with(&[("m19a.json", version("op-1", "2023-03-01", None, &[]))]);
        let set = PolicySet::load(Some(d.path())).unwrap();
        assert_eq!(
            set.in_force(day("2023-02-28")).unwrap().version(),
            "lucheng-2023.1"
        );
        assert_eq!(set.in_force(day("2023-03-01")).unwrap().version(), "op-1");
        let op = set.get("op-1").unwrap();
        assert!(op.origin.ends_with("m19a.json"));
        assert_eq!(op.hash.len(), 64);
        // Restating the built-in version for all its dates must say it supersedes it.
        let d = dir_with(&[("same-start.json", version("op-2", "2023-01-05", None, &[]))]);
        assert!(matches!(
            PolicySet::load(Some(d.path())),
            Err(PolicyError::Overlap { .. })
        ));
        let d = dir_with(&[(
            "restate.json",
            version("op-2", "2023-01-05", None, &["lucheng-2023.1"]),
        )]);
        let set = PolicySet::load(Some(d.path())).unwrap();
        assert_eq!(set.in_force(day("2023-02-01")).unwrap().version(), "op-2");
        assert!(set.get("lucheng-2023.1").is_ok(), "still known for replay");
        // Explicit ends that cross the next start overlap; ends that stop short leave a gap.
        let d = dir_with(&[
            (
                "a.json",
                version("op-a", "2023-03-01", Some("2023-04-30"), &[]),
            ),
            ("b.json", version("op-b", "2023-04-15", None, &[])),
        ]);
        let e = PolicySet::load(Some(d.path())).unwrap_err().to_string();
        assert!(
            e.contains("op-a") && e.contains("op-b") && e.contains("overlap"),
            "{e}"
        );
        // Invalid files and repeated names are refused, naming the file.
        let d = dir_with(&[("bad.json", "{ \"version\": \"x\" }".into())]);
        let e = PolicySet::load(Some(d.path())).unwrap_err().to_string();
        assert!(e.contains("bad.json"), "{e}");
        let d = dir_with(&[(
            "dup.json",
            version("lucheng-2023.1", "2023-05-01", None, &[]),
        )]);
        assert!(matches!(
            PolicySet::load(Some(d.path())),
            Err(PolicyError::Duplicate(..))
        ));
        let d = dir_with(&[("s.json", version("op-s", "2023-05-01", None, &["nope"]))]);
        assert!(matches!(
            PolicySet::load(Some(d.path())),
            Err(PolicyError::UnknownSuperseded { .. })
        ));
    }
}
