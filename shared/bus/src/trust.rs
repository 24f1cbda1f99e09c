//! Signed events (CONTRACT.md, "Signed events"): every event a service publishes carries
//! `Huiqi-Signature: ed25519:<public key>:<base64 signature of the payload bytes>`, and a
//! consumer acts on an event only when the key is trusted *for that event type*.
//!
//! Why on top of NATS permissions: permissions can be wrong, a credential can leak, and a bus
//! can be open; a signature still tells a payment order made by award from one made by anyone
//! else. Keys are Ed25519 nkeys (the `nkeys` crate async-nats itself uses for NATS keys); a
//! service key is an nkey of the "service" kind (seed `SV…`, public key `V…`).
//!
//! The trust file names each public key, the service it belongs to and the event types it may
//! produce. A key is `active` (accepted everywhere) or `retired` (accepted only when reading
//! history — restore and audit — so a rotated-out key still proves what it signed before).

use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The NATS header that carries an event's signature.
pub const SIGNATURE_HEADER: &str = "Huiqi-Signature";

/// Errors loading keys and trust files.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("signing key {origin}: {message}")]
    Key { origin: String, message: String },
    #[error("trust file {path}: {message}")]
    TrustFile { path: String, message: String },
    #[error("io on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// A service's private signing key. Its `Debug` shows only the public key.
pub struct SigningKey {
    pair: nkeys::KeyPair,
    public: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public)
    }
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Self {
        Self::from_pair(nkeys::KeyPair::new_service())
    }

    fn from_pair(pair: nkeys::KeyPair) -> Self {
        let public = pair.public_key();
        SigningKey { pair, public }
    }

    /// Reads a seed (`SV…`; any nkey seed is accepted). `origin` names where it came from
    /// for the error message; the seed itself is never repeated.
    pub fn from_seed(seed: &str, origin: &str) -> Result<Self, TrustError> {
        nkeys::KeyPair::from_seed(seed.trim())
            .map(Self::from_pair)
            .map_err(|e| TrustError::Key {
                origin: origin.to_string(),
                message: format!("not a valid nkey seed ({})", e.kind_name()),
            })
    }

    /// Reads a seed file (the whole file is the seed).
    pub fn from_file(path: &Path) -> Result<Self, TrustError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrustError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_seed(&text, &path.display().to_string())
    }

    /// The seed, for writing a key file. Treat it as a secret.
    pub fn seed(&self) -> String {
        self.pair
            .seed()
            .expect("a generated or loaded key has its seed")
    }

    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// The `Huiqi-Signature` header value for `payload`.
    pub fn sign(&self, payload: &[u8]) -> String {
        let sig = self.pair.sign(payload).expect("a key with a seed signs");
        format!(
            "ed25519:{}:{}",
            self.public,
            base64::engine::general_purpose::STANDARD.encode(sig)
        )
    }
}

trait KindName {
    fn kind_name(&self) -> String;
}

impl KindName for nkeys::error::Error {
    fn kind_name(&self) -> String {
        // The error's text may quote the input; only its kind is safe to repeat.
        self.kind().to_string()
    }
}

/// Whether a trusted key may sign new events or only vouch for history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    #[default]
    Active,
    Retired,
}

/// One entry of the trust file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKey {
    pub public_key: String,
    /// The producer: a Huiqi service (`intake`, `verification`, `award`, `payout`) or a portal
    /// (`portal:<name>`), which must also be the events' `source`.
    pub service: String,
    /// Event types (`huiqi.payment.ordered.v1`, …) this key may produce.
    pub types: Vec<String>,
    #[serde(default)]
    pub status: KeyStatus,
}

/// The trust file: `{ "keys": [ … ] }`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustFile {
    pub keys: Vec<TrustedKey>,
}

/// Who signed an event that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    pub service: String,
    pub public_key: String,
}

/// Why an event's signature is not accepted. Messages name keys by their public part only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no {SIGNATURE_HEADER} header: unsigned event")]
    Missing,
    #[error("{SIGNATURE_HEADER} header is malformed: {0}")]
    Malformed(String),
    #[error("signed by {0}, a key the trust file does not name")]
    UntrustedKey(String),
    #[error("signed by {0}, a retired key (accepted only when reading history)")]
    RetiredKey(String),
    #[error("signature does not verify against the payload (altered or forged)")]
    Invalid,
    #[error("not a readable event: {0}")]
    NotAnEvent(String),
    #[error("key of `{service}` may not produce `{ty}`")]
    TypeNotAllowed { service: String, ty: String },
    #[error("key of `{service}` signed an event whose source is `{source_name}`")]
    SourceMismatch {
        service: String,
        source_name: String,
    },
}

/// Live consumers accept active keys only; reading history (restore, audit) also accepts
/// retired ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Live,
    History,
}

struct Entry {
    key: TrustedKey,
    verifier: nkeys::KeyPair,
}

/// The keys a service trusts, looked up by public key.
#[derive(Default)]
pub struct TrustStore {
    by_key: HashMap<String, Entry>,
}

impl std::fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustStore")
            .field("keys", &self.by_key.len())
            .finish()
    }
}

impl TrustStore {
    pub fn new(file: TrustFile, origin: &str) -> Result<Self, TrustError> {
        let mut by_key = HashMap::new();
        for (i, key) in file.keys.into_iter().enumerate() {
            let bad = |message: String| TrustError::TrustFile {
                path: origin.to_string(),
                message: format!("keys[{i}]: {message}"),
            };
            let verifier = nkeys::KeyPair::from_public_key(&key.public_key).map_err(|e| {
                bad(format!(
                    "public_key is not an nkey public key ({})",
                    e.kind_name()
                ))
            })?;
            if key.service.trim().is_empty() {
                return Err(bad("service must not be empty".into()));
            }
            if key.types.is_empty() {
                return Err(bad("types must name at least one event type".into()));
            }
            if by_key.contains_key(&key.public_key) {
                return Err(bad(format!("{} is listed twice", key.public_key)));
            }
            by_key.insert(key.public_key.clone(), Entry { key, verifier });
        }
        Ok(TrustStore { by_key })
    }

    /// Reads a trust file strictly (unknown fields are errors).
    pub fn from_file(path: &Path) -> Result<Self, TrustError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrustError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let file: TrustFile = serde_json::from_str(&text).map_err(|e| TrustError::TrustFile {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::new(file, &path.display().to_string())
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Checks an event: the header parses, the key is trusted (and active in [`Mode::Live`]),
    /// the signature verifies over the exact payload bytes, the key may produce the event's
    /// type and the event's `source` is the key's service.
    pub fn verify(
        &self,
        header: Option<&str>,
        payload: &[u8],
        mode: Mode,
    ) -> Result<Signer, SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let rest = header
            .strip_prefix("ed25519:")
            .ok_or_else(|| SignatureError::Malformed("must start with `ed25519:`".into()))?;
        let (public, sig) = rest.split_once(':').ok_or_else(|| {
            SignatureError::Malformed("expected ed25519:<key>:<signature>".into())
        })?;
        let sig = base64::engine::general_purpose::STANDARD
            .decode(sig.trim())
            .map_err(|_| SignatureError::Malformed("signature is not base64".into()))?;
        let entry = self
            .by_key
            .get(public)
            .ok_or_else(|| SignatureError::UntrustedKey(short_key(public)))?;
        if entry.key.status == KeyStatus::Retired && mode == Mode::Live {
            return Err(SignatureError::RetiredKey(short_key(public)));
        }
        entry
            .verifier
            .verify(payload, &sig)
            .map_err(|_| SignatureError::Invalid)?;
        #[derive(Deserialize)]
        struct Head<'a> {
            #[serde(rename = "type", borrow)]
            ty: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            source: std::borrow::Cow<'a, str>,
        }
        let head: Head = serde_json::from_slice(payload).map_err(|e| {
            SignatureError::NotAnEvent(huiqi_events::mask_digit_runs(&e.to_string()))
        })?;
        if !entry.key.types.iter().any(|t| t == head.ty.as_ref()) {
            return Err(SignatureError::TypeNotAllowed {
                service: entry.key.service.clone(),
                ty: huiqi_events::escape_control(&head.ty).into_owned(),
            });
        }
        if head.source != entry.key.service {
            return Err(SignatureError::SourceMismatch {
                service: entry.key.service.clone(),
                source_name: huiqi_events::escape_control(&head.source).into_owned(),
            });
        }
        Ok(Signer {
            service: entry.key.service.clone(),
            public_key: public.to_string(),
        })
    }
}

/// A public key shortened for messages (it is not secret, but 56 characters are noise).
fn short_key(k: &str) -> String {
    let k: String = huiqi_events::escape_control(k).chars().take(64).collect();
    if k.len() > 12 {
        format!("{}…", &k[..12])
    } else {
        k
    }
}

/// The services that sign events.
pub const SIGNING_SERVICES: &[&str] = &["intake", "verification", "award", "payout"];

/// A key set for a deployment or a test: one signing key per service and the trust file that
/// names them with the event types each may produce (`huiqi_events::types::PRODUCERS`).
///
/// On disk (`huiqi keys generate`, and `huiqi up` under its data dir):
/// `signing/<service>.seed` (mode 0600) and `trust.json`.
pub struct KeySet {
    pub keys: Vec<(String, std::sync::Arc<SigningKey>)>,
    pub trust: TrustFile,
}

impl KeySet {
    /// Fresh keys for every signing service.
    pub fn generate() -> Self {
        let keys: Vec<(String, std::sync::Arc<SigningKey>)> = SIGNING_SERVICES
            .iter()
            .map(|s| (s.to_string(), std::sync::Arc::new(SigningKey::generate())))
            .collect();
        let trust = TrustFile {
            keys: keys
                .iter()
                .map(|(s, k)| TrustedKey {
                    public_key: k.public_key().to_string(),
                    service: s.clone(),
                    types: huiqi_events::types::produced_by(s)
                        .iter()
                        .map(|t| t.to_string())
                        .collect(),
                    status: KeyStatus::Active,
                })
                .collect(),
        };
        KeySet { keys, trust }
    }

    pub fn key(&self, service: &str) -> Option<std::sync::Arc<SigningKey>> {
        self.keys
            .iter()
            .find(|(s, _)| s == service)
            .map(|(_, k)| k.clone())
    }

    /// A trust store over this set's trust file.
    pub fn trust_store(&self) -> TrustStore {
        TrustStore::new(self.trust.clone(), "generated key set").expect("generated keys are valid")
    }

    pub fn seed_path(dir: &Path, service: &str) -> PathBuf {
        dir.join("signing").join(format!("{service}.seed"))
    }

    pub fn trust_path(dir: &Path) -> PathBuf {
        dir.join("trust.json")
    }

    /// Writes the seeds (0600) and the trust file under `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), TrustError> {
        for (service, key) in &self.keys {
            write_secret(&Self::seed_path(dir, service), &key.seed())?;
        }
        let path = Self::trust_path(dir);
        let text = serde_json::to_string_pretty(&self.trust).expect("serializes");
        std::fs::write(&path, text + "\n").map_err(|source| TrustError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Reads a key set written by [`KeySet::write`].
    pub fn load(dir: &Path) -> Result<Self, TrustError> {
        let mut keys = Vec::new();
        for s in SIGNING_SERVICES {
            keys.push((
                s.to_string(),
                std::sync::Arc::new(SigningKey::from_file(&Self::seed_path(dir, s))?),
            ));
        }
        let path = Self::trust_path(dir);
        let text = std::fs::read_to_string(&path).map_err(|source| TrustError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let trust = serde_json::from_str(&text).map_err(|e| TrustError::TrustFile {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(KeySet { keys, trust })
    }

    /// Loads the set under `dir`, or generates and writes one when there is none.
    pub fn load_or_generate(dir: &Path) -> Result<(Self, bool), TrustError> {
        if Self::trust_path(dir).exists() {
            Ok((Self::load(dir)?, false))
        } else {
            let set = Self::generate();
            set.write(dir)?;
            Ok((set, true))
        }
    }
}

/// Writes a secret file readable by its owner only (created with mode 0600 on Unix).
pub fn write_secret(path: &Path, text: &str) -> Result<(), TrustError> {
    use std::io::Write;
    let io = |source| TrustError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.write_all(b"\n").map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(source: &str, ty: &str) -> Vec<u8> {
        huiqi_events::Envelope::new(source, ty, "C-1", &serde_json::json!({ "x": 1 }))
            .unwrap()
            .encode()
    }

    #[test]
    fn a_signed_event_verifies_and_every_forgery_is_named() {
        let set = KeySet::generate();
        let trust = set.trust_store();
        let award = set.key("award").unwrap();
        let order = event("award", huiqi_events::types::PAYMENT_ORDERED);
        let sig = award.sign(&order);
        let who = trust.verify(Some(&sig), &order, Mode::Live).unwrap();
        assert_eq!(who.service, "award");

        assert_eq!(
            trust.verify(None, &order, Mode::Live),
            Err(SignatureError::Missing)
        );
        let mut altered = order.clone();
        let n = altered.len();
        altered[n - 3] ^= 1;
        assert_eq!(
            trust.verify(Some(&sig), &altered, Mode::Live),
            Err(SignatureError::Invalid)
        );
        let stranger = SigningKey::generate();
        assert!(matches!(
            trust.verify(Some(&stranger.sign(&order)), &order, Mode::Live),
            Err(SignatureError::UntrustedKey(_))
        ));
        // Verification's key is trusted, but not for payment orders.
        let by_verification = set.key("verification").unwrap().sign(&order);
        assert!(matches!(
            trust.verify(Some(&by_verification), &order, Mode::Live),
            Err(SignatureError::TypeNotAllowed { .. })
        ));
        // Award's key on an event claiming another source.
        let claims_payout = event("payout", huiqi_events::types::PAYMENT_ORDERED);
        assert!(matches!(
            trust.verify(
                Some(&award.sign(&claims_payout)),
                &claims_payout,
                Mode::Live
            ),
            Err(SignatureError::SourceMismatch { .. })
        ));
        assert!(matches!(
            trust.verify(Some("ed25519:nope"), &order, Mode::Live),
            Err(SignatureError::Malformed(_))
        ));
    }

    #[test]
    fn retired_keys_vouch_for_history_only() {
        let set = KeySet::generate();
        let mut file = set.trust.clone();
        file.keys
            .iter_mut()
            .for_each(|k| k.status = KeyStatus::Retired);
        let trust = TrustStore::new(file, "test").unwrap();
        let order = event("award", huiqi_events::types::PAYMENT_ORDERED);
        let sig = set.key("award").unwrap().sign(&order);
        assert!(matches!(
            trust.verify(Some(&sig), &order, Mode::Live),
            Err(SignatureError::RetiredKey(_))
        ));
        assert!(trust.verify(Some(&sig), &order, Mode::History).is_ok());
    }

    #[test]
    fn key_sets_round_trip_and_seeds_stay_out_of_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (set, fresh) = KeySet::load_or_generate(dir.path()).unwrap();
        assert!(fresh);
        let (again, fresh) = KeySet::load_or_generate(dir.path()).unwrap();
        assert!(!fresh);
        assert_eq!(set.trust, again.trust);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(KeySet::seed_path(dir.path(), "award"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let err = SigningKey::from_seed("SVNOTAREALSEEDATALL1234567890", "env HUIQI_SIGNING_KEY")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("HUIQI_SIGNING_KEY") && !err.contains("NOTAREAL"),
            "{err}"
        );
        let bad = TrustStore::new(
            TrustFile {
                keys: vec![TrustedKey {
                    public_key: "nonsense".into(),
                    service: "award".into(),
                    types: vec!["t".into()],
                    status: KeyStatus::Active,
                }],
            },
            "trust.json",
        )
        .unwrap_err()
        .to_string();
        assert!(
            bad.contains("keys[0]") && bad.contains("public_key"),
            "{bad}"
        );
    }
}
