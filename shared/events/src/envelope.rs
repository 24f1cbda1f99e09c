//! The CloudEvents 1.0 structured-mode envelope of CONTRACT.md.

use chrono::{DateTime, FixedOffset, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// An event's `data`, kept as the JSON text it arrived or was made as. Decoding an envelope
/// checks the text is JSON but builds no tree of it, and encoding writes it back verbatim:
/// the consumer that needs the data reads it once, typed, with [`Envelope::data_as`]. (A
/// `serde_json::Value` here was parsed, dropped and re-serialized on every hop: a fifth of the
/// pipeline's CPU under `huiqi loadgen`.)
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Data(Box<serde_json::value::RawValue>);

impl Data {
    pub fn from_value<T: Serialize + ?Sized>(v: &T) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(v).map(Data)
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The data as a JSON tree, for tools that look at fields of any event type.
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(self.0.get()).unwrap_or(serde_json::Value::Null)
    }
}

/// Equal when they are the same JSON (key order and spacing aside).
impl PartialEq for Data {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get() || self.value() == other.value()
    }
}

/// One event on the wire and in every log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub time: DateTime<FixedOffset>,
    pub subject: String,
    pub datacontenttype: String,
    pub data: Data,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlationid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causationid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policyversion: Option<String>,
}

/// Why bytes or a value could not be read as an event.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not a JSON CloudEvent: {0}")]
    Json(#[from] serde_json::Error),
    #[error("field `{field}`: {message}")]
    Field {
        field: &'static str,
        message: String,
    },
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    #[error("event type `{ty}` is newer than this build (knows v{known})")]
    NewerVersion { ty: String, known: u32 },
    #[error("data of `{ty}` does not match its schema: {source}")]
    Data {
        ty: String,
        source: serde_json::Error,
    },
}

/// Namespace of derived event ids (CONTRACT.md, "Deterministic event ids").
const DERIVED_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6875_6971_692d_6576_656e_742d_6964_7332);

/// The id of an event derived from a cause: UUIDv5 of the producing service, the cause's key
/// (its event id, or another stable name of what caused it), the event type and an index that
/// tells apart several events of one type from one cause. A restart, a restore from the stream
/// or a replay re-derives the same id, so JetStream's duplicate window and every inbox drop the
/// repeat.
pub fn derived_id(source: &str, cause: &str, ty: &str, index: &str) -> String {
    let mut name = String::with_capacity(source.len() + cause.len() + ty.len() + index.len() + 3);
    for (i, part) in [source, cause, ty, index].into_iter().enumerate() {
        if i > 0 {
            name.push('\u{1f}');
        }
        name.push_str(part);
    }
    uuid::Uuid::new_v5(&DERIVED_NAMESPACE, name.as_bytes()).to_string()
}

impl Envelope {
    /// A new event with a fresh v4 id and the current time in Asia/Shanghai: for what enters
    /// the system from outside (a portal's application, a test's input). Everything a service
    /// derives uses [`Envelope::derived`].
    pub fn new<T: Serialize>(
        source: &str,
        ty: &str,
        subject: &str,
        data: &T,
    ) -> Result<Self, EnvelopeError> {
        Self::with_id(uuid::Uuid::new_v4().to_string(), source, ty, subject, data)
    }

    /// An event derived from `cause` (see [`derived_id`]); set the causation with
    /// [`Envelope::caused_by`] when the cause is an event.
    pub fn derived<T: Serialize>(
        source: &str,
        ty: &str,
        subject: &str,
        data: &T,
        cause: &str,
        index: &str,
    ) -> Result<Self, EnvelopeError> {
        Self::with_id(
            derived_id(source, cause, ty, index),
            source,
            ty,
            subject,
            data,
        )
    }

    fn with_id<T: Serialize>(
        id: String,
        source: &str,
        ty: &str,
        subject: &str,
        data: &T,
    ) -> Result<Self, EnvelopeError> {
        let shanghai = FixedOffset::east_opt(8 * 3600).expect("valid offset");
        Ok(Envelope {
            specversion: "1.0".into(),
            id,
            source: source.into(),
            ty: ty.into(),
            time: Utc::now().with_timezone(&shanghai),
            subject: subject.into(),
            datacontenttype: "application/json".into(),
            data: Data::from_value(data)?,
            correlationid: None,
            causationid: None,
            policyversion: None,
        })
    }

    /// This event was caused by `cause`: copies its correlation id (or uses its id) and sets the
    /// causation id, so an auditor can walk a claim's chain of events.
    pub fn caused_by(mut self, cause: &Envelope) -> Self {
        self.correlationid = Some(
            cause
                .correlationid
                .clone()
                .unwrap_or_else(|| cause.id.clone()),
        );
        self.causationid = Some(cause.id.clone());
        self
    }

    pub fn with_policy_version(mut self, v: &str) -> Self {
        self.policyversion = Some(v.to_string());
        self
    }

    /// Reads an envelope and checks the fields CONTRACT.md requires.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let env: Envelope = serde_json::from_slice(bytes)?;
        env.validate()?;
        Ok(env)
    }

    pub fn validate(&self) -> Result<(), EnvelopeError> {
        let bad = |field: &'static str, message: &str| {
            Err(EnvelopeError::Field {
                field,
                message: message.to_string(),
            })
        };
        if self.specversion != "1.0" {
            return bad("specversion", "must be \"1.0\"");
        }
        if self.id.trim().is_empty() {
            return bad("id", "must not be empty");
        }
        if self.source.trim().is_empty() {
            return bad("source", "must not be empty");
        }
        if self.ty.trim().is_empty() {
            return bad("type", "must not be empty");
        }
        if self.datacontenttype != "application/json" {
            return bad("datacontenttype", "must be \"application/json\"");
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always serializes")
    }

    /// Decodes `data` as `T`, naming the event type in the error.
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T, EnvelopeError> {
        serde_json::from_str(self.data.get()).map_err(|source| EnvelopeError::Data {
            ty: self.ty.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_links_causes() {
        let a = Envelope::new("portal", "huiqi.application.submitted.v1", "P-1", &1).unwrap();
        let b = Envelope::new("intake", "huiqi.intake.accepted.v1", "P-1", &2)
            .unwrap()
            .caused_by(&a);
        assert_eq!(b.causationid.as_deref(), Some(a.id.as_str()));
        assert_eq!(b.correlationid.as_deref(), Some(a.id.as_str()));
        let back = Envelope::decode(&b.encode()).unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn derived_ids_depend_only_on_their_cause() {
        let a =
            Envelope::derived("award", "huiqi.award.decided.v1", "C-1", &1, "ev-1", "0").unwrap();
        let b =
            Envelope::derived("award", "huiqi.award.decided.v1", "C-1", &2, "ev-1", "0").unwrap();
        assert_eq!(a.id, b.id, "same cause, type and index: same id");
        for other in [
            Envelope::derived("payout", "huiqi.award.decided.v1", "C-1", &1, "ev-1", "0"),
            Envelope::derived("award", "huiqi.award.decided.v1", "C-1", &1, "ev-2", "0"),
            Envelope::derived("award", "huiqi.payment.ordered.v1", "C-1", &1, "ev-1", "0"),
            Envelope::derived("award", "huiqi.award.decided.v1", "C-1", &1, "ev-1", "1"),
        ] {
            assert_ne!(a.id, other.unwrap().id);
        }
        // The separator keeps parts from running into each other.
        assert_ne!(
            derived_id("a", "bc", "t", "0"),
            derived_id("ab", "c", "t", "0")
        );
    }

    #[test]
    fn names_the_bad_field() {
        let mut a = Envelope::new("p", "t.v1", "s", &1).unwrap();
        a.specversion = "0.3".into();
        let err = Envelope::decode(&a.encode()).unwrap_err();
        assert!(err.to_string().contains("specversion"), "{err}");
    }
}
