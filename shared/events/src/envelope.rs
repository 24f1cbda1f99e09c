//! The CloudEvents 1.0 structured-mode envelope of CONTRACT.md.

use chrono::{DateTime, FixedOffset, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

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
    pub data: serde_json::Value,
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

impl Envelope {
    /// A new event with a fresh v4 id and the current time in Asia/Shanghai.
    pub fn new<T: Serialize>(
        source: &str,
        ty: &str,
        subject: &str,
        data: &T,
    ) -> Result<Self, EnvelopeError> {
        let shanghai = FixedOffset::east_opt(8 * 3600).expect("valid offset");
        Ok(Envelope {
            specversion: "1.0".into(),
            id: uuid::Uuid::new_v4().to_string(),
            source: source.into(),
            ty: ty.into(),
            time: Utc::now().with_timezone(&shanghai),
            subject: subject.into(),
            datacontenttype: "application/json".into(),
            data: serde_json::to_value(data)?,
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
        T::deserialize(&self.data).map_err(|source| EnvelopeError::Data {
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
    fn names_the_bad_field() {
        let mut a = Envelope::new("p", "t.v1", "s", &1).unwrap();
        a.specversion = "0.3".into();
        let err = Envelope::decode(&a.encode()).unwrap_err();
        assert!(err.to_string().contains("specversion"), "{err}");
    }
}
