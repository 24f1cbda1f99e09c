//! Huiqi's reading of the Lucheng District 2023 "retain employees, stabilise production" policy.
//!
//! Why a crate of its own, with no I/O: a decision must be reproducible to the fen when an
//! auditor replays the events years later. So everything a decision depends on is an argument —
//! the application, the checked facts, the history of earlier awards, and a [`Policy`] version
//! whose parameters are data (`versions/*.json`, embedded and hashed) — and nothing else: no
//! clock, no environment, no hash-map iteration order (only `BTreeMap`/`Vec` reach the output).
//!
//! Each measure sits in its own module under [`measures`], whose doc quotes the source sentence
//! and says how it is read. [`terms`] holds the definitions shared by several measures and the
//! supplementary rules (eligible applicant, policy period, take-the-highest).

pub mod history;
pub mod measures;
pub mod params;
pub mod rules;
pub mod terms;

pub use history::History;
pub use params::Params;

use chrono::NaiveDate;
use huiqi_events::payloads::{Application, AwardDecision, Facts};
use sha2::{Digest, Sha256};

/// Errors loading policy versions.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy file {name}: {source}")]
    Parse {
        name: String,
        source: serde_json::Error,
    },
    #[error("unknown policy version `{0}` (known: {1})")]
    UnknownVersion(String, String),
    #[error("no policy version is in force on {0}")]
    NotInForce(NaiveDate),
}

/// One version of the policy: its parameters and the SHA-256 of the file they came from.
#[derive(Debug, Clone)]
pub struct Policy {
    pub params: Params,
    pub hash: String,
}

impl Policy {
    /// Parses a parameter file strictly (unknown or missing keys are errors).
    pub fn from_json(name: &str, text: &str) -> Result<Self, PolicyError> {
        let params: Params = serde_json::from_str(text).map_err(|source| PolicyError::Parse {
            name: name.to_string(),
            source,
        })?;
        let hash = Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Policy { params, hash })
    }

    pub fn version(&self) -> &str {
        &self.params.version
    }
}

/// The parameter files shipped with this build, oldest first.
const BUILTIN: &[(&str, &str)] = &[
    (
        "lucheng-2023.1.json",
        include_str!("../versions/lucheng-2023.1.json"),
    ),
    (
        "lucheng-2023.2.json",
        include_str!("../versions/lucheng-2023.2.json"),
    ),
];

/// Every known version, ordered by the date it takes effect.
#[derive(Debug, Clone)]
pub struct PolicySet {
    versions: Vec<Policy>,
}

impl PolicySet {
    /// The versions embedded in this build.
    pub fn builtin() -> Self {
        let mut versions: Vec<Policy> = BUILTIN
            .iter()
            .map(|(name, text)| Policy::from_json(name, text).expect("embedded policy parses"))
            .collect();
        versions.sort_by_key(|p| p.params.effective_from);
        PolicySet { versions }
    }

    /// The version in force on `date`: the latest whose `effective_from` is not after it.
    pub fn in_force(&self, date: NaiveDate) -> Result<&Policy, PolicyError> {
        self.versions
            .iter()
            .rev()
            .find(|p| p.params.effective_from <= date)
            .ok_or(PolicyError::NotInForce(date))
    }

    /// A named version (for replay and `huiqi evaluate --policy-version`).
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

    pub fn versions(&self) -> &[Policy] {
        &self.versions
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
