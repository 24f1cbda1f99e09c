//! The checks Huiqi asks bureau providers (CONTRACT.md, "System → check providers"), each in
//! one place: its name and subject, what its request asks about, its typed reply, and how the
//! replies of a request cut into chunks join up.
//!
//! Why one registry: a check used to be spelled out in four crates (the provider simulator, the
//! verification plan, the reply validation, the award's fact assembly) and its reply was parsed
//! three times. Now verification reads a provider's bytes once into a [`CheckReply`], records
//! that typed value, and award joins the recorded chunks into [`Facts`] without re-parsing.
//! Adding a check: its reply type in `payloads`, a variant here, and the measures that use it.

use crate::payloads::{
    EnterpriseReply, ExitEntryReply, Facts, PresenceReply, PriorBenefitsReply,
    ResidencePermitReply, SocialInsuranceReply, StatisticsReply, TelecomReply,
};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// A check a measure may need.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    Enterprise,
    SocialInsurance,
    Presence,
    ResidencePermit,
    Telecom,
    Statistics,
    ExitEntry,
    PriorBenefits,
}

/// What a check's request asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The applicant as a whole (one request).
    Applicant,
    /// The application's persons (requests of at most a chunk of ID numbers each).
    Persons,
    /// The employees' phone numbers.
    Phones,
}

/// What a request may need besides its chunk: the applicant, the measure, and the windows a
/// check asks about (taken from the policy version).
#[derive(Debug, Clone, Copy)]
pub struct RequestContext<'a> {
    pub uscc: &'a str,
    pub measure: &'a str,
    /// The M1 stay window (presence).
    pub stay_window: (NaiveDate, NaiveDate),
    /// The policy period (exit-entry records).
    pub policy_period: (NaiveDate, NaiveDate),
}

impl Check {
    pub const ALL: &'static [Check] = &[
        Check::Enterprise,
        Check::SocialInsurance,
        Check::Presence,
        Check::ResidencePermit,
        Check::Telecom,
        Check::Statistics,
        Check::ExitEntry,
        Check::PriorBenefits,
    ];

    /// The name in subjects, records and fixture files.
    pub fn name(self) -> &'static str {
        match self {
            Check::Enterprise => "enterprise",
            Check::SocialInsurance => "social_insurance",
            Check::Presence => "presence",
            Check::ResidencePermit => "residence_permit",
            Check::Telecom => "telecom",
            Check::Statistics => "statistics",
            Check::ExitEntry => "exit_entry",
            Check::PriorBenefits => "prior_benefits",
        }
    }

    pub fn from_name(name: &str) -> Option<Check> {
        Check::ALL.iter().copied().find(|c| c.name() == name)
    }

    /// `huiqi.checks.<name>`.
    pub fn subject(self) -> String {
        crate::subjects::check_subject(self.name())
    }

    pub fn input(self) -> Input {
        match self {
            Check::Enterprise | Check::Statistics => Input::Applicant,
            Check::Telecom => Input::Phones,
            Check::SocialInsurance
            | Check::Presence
            | Check::ResidencePermit
            | Check::ExitEntry
            | Check::PriorBenefits => Input::Persons,
        }
    }

    /// Asked even when the application names no person (prior payments may be enterprise-level).
    pub fn asked_without_persons(self) -> bool {
        self == Check::PriorBenefits
    }

    /// The request for one chunk of persons or phones (empty for applicant checks).
    pub fn request(self, ctx: &RequestContext<'_>, chunk: &[String]) -> serde_json::Value {
        use serde_json::json;
        match self {
            Check::Enterprise | Check::Statistics => json!({ "uscc": ctx.uscc }),
            Check::SocialInsurance => json!({ "uscc": ctx.uscc, "id_numbers": chunk }),
            Check::Presence => json!({
                "id_numbers": chunk, "from": ctx.stay_window.0, "to": ctx.stay_window.1
            }),
            Check::ResidencePermit => json!({ "id_numbers": chunk }),
            Check::Telecom => json!({ "phones": chunk }),
            Check::ExitEntry => json!({
                "id_numbers": chunk, "from": ctx.policy_period.0, "to": ctx.policy_period.1
            }),
            Check::PriorBenefits => json!({
                "uscc": ctx.uscc, "measure": ctx.measure, "id_numbers": chunk
            }),
        }
    }

    /// Reads a provider's reply bytes as this check's typed reply (the one parse). A reply
    /// `{"error": …}` or one that does not fit the contract is an error naming what is wrong.
    pub fn read_reply(self, bytes: &[u8]) -> Result<CheckReply, String> {
        #[derive(Deserialize)]
        struct ErrorReply {
            error: serde_json::Value,
        }
        let provider_error = || {
            serde_json::from_slice::<ErrorReply>(bytes)
                .ok()
                .map(|e| format!("provider error: {}", e.error))
        };
        // The same typed read as a reply inside a recorded check ([`ReplyOf`]).
        let typed = (|| {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            let reply = serde::de::DeserializeSeed::deserialize(ReplyOf(self), &mut de)?;
            de.end()?;
            Ok::<_, serde_json::Error>(reply)
        })()
        .map_err(|e| e.to_string());
        // A reply with a top-level `error` is an error even if the rest would read; it is
        // looked for (a second parse) only when the reply failed or names an `error` at all.
        let mentions_error = bytes.windows(7).any(|w| w == b"\"error\"");
        match typed {
            Ok(reply) if !mentions_error => Ok(reply),
            Ok(reply) => provider_error().map_or(Ok(reply), Err),
            Err(e) => Err(provider_error().unwrap_or(e)),
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A typed check reply; on the wire `{"check": "<name>", "reply": {…}}` (inside a recorded
/// check event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "check", content = "reply", rename_all = "snake_case")]
pub enum CheckReply {
    Enterprise(EnterpriseReply),
    SocialInsurance(SocialInsuranceReply),
    Presence(PresenceReply),
    ResidencePermit(ResidencePermitReply),
    Telecom(TelecomReply),
    Statistics(StatisticsReply),
    ExitEntry(ExitEntryReply),
    PriorBenefits(PriorBenefitsReply),
}

/// Reads a check's reply as its typed variant, the check being known already.
struct ReplyOf(Check);

impl<'de> serde::de::DeserializeSeed<'de> for ReplyOf {
    type Value = CheckReply;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<CheckReply, D::Error> {
        Ok(match self.0 {
            Check::Enterprise => CheckReply::Enterprise(Deserialize::deserialize(d)?),
            Check::SocialInsurance => CheckReply::SocialInsurance(Deserialize::deserialize(d)?),
            Check::Presence => CheckReply::Presence(Deserialize::deserialize(d)?),
            Check::ResidencePermit => CheckReply::ResidencePermit(Deserialize::deserialize(d)?),
            Check::Telecom => CheckReply::Telecom(Deserialize::deserialize(d)?),
            Check::Statistics => CheckReply::Statistics(Deserialize::deserialize(d)?),
            Check::ExitEntry => CheckReply::ExitEntry(Deserialize::deserialize(d)?),
            Check::PriorBenefits => CheckReply::PriorBenefits(Deserialize::deserialize(d)?),
        })
    }
}

/// `CheckRecorded` read in one pass: the reply is decoded straight into its type when `check`
/// comes before it (as Huiqi writes it); only a record written with `reply` first has its reply
/// held as a JSON value until `check` is read. Unknown fields are ignored, as the derive did.
impl<'de> Deserialize<'de> for crate::payloads::CheckRecorded {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, IgnoredAny, MapAccess, Visitor};
        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "snake_case")]
        enum Field {
            ClaimId,
            Chunk,
            Chunks,
            Attempts,
            Check,
            Reply,
            #[serde(other)]
            Other,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = crate::payloads::CheckRecorded;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a recorded check {claim_id, chunk, chunks, attempts, check, reply}")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let (mut claim_id, mut chunk, mut chunks, mut attempts) = (None, None, None, None);
                let mut check: Option<Check> = None;
                let mut reply: Option<CheckReply> = None;
                let mut early: Option<serde_json::Value> = None;
                fn once<T, E: Error>(slot: &Option<T>, name: &'static str) -> Result<(), E> {
                    match slot {
                        Some(_) => Err(E::duplicate_field(name)),
                        None => Ok(()),
                    }
                }
                while let Some(field) = map.next_key::<Field>()? {
                    match field {
                        Field::ClaimId => {
                            once(&claim_id, "claim_id")?;
                            claim_id = Some(map.next_value::<String>()?);
                        }
                        Field::Chunk => {
                            once(&chunk, "chunk")?;
                            chunk = Some(map.next_value::<u32>()?);
                        }
                        Field::Chunks => {
                            once(&chunks, "chunks")?;
                            chunks = Some(map.next_value::<u32>()?);
                        }
                        Field::Attempts => {
                            once(&attempts, "attempts")?;
                            attempts = Some(map.next_value::<u32>()?);
                        }
                        Field::Check => {
                            once(&check, "check")?;
                            check = Some(map.next_value::<Check>()?);
                        }
                        Field::Reply => {
                            if reply.is_some() || early.is_some() {
                                return Err(A::Error::duplicate_field("reply"));
                            }
                            match check {
                                Some(c) => reply = Some(map.next_value_seed(ReplyOf(c))?),
                                None => early = Some(map.next_value()?),
                            }
                        }
                        Field::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                let check = check.ok_or_else(|| A::Error::missing_field("check"))?;
                let reply = match (reply, early) {
                    (Some(r), _) => r,
                    (None, Some(v)) => serde::de::DeserializeSeed::deserialize(ReplyOf(check), v)
                        .map_err(A::Error::custom)?,
                    (None, None) => return Err(A::Error::missing_field("reply")),
                };
                Ok(crate::payloads::CheckRecorded {
                    claim_id: claim_id.ok_or_else(|| A::Error::missing_field("claim_id"))?,
                    chunk: chunk.ok_or_else(|| A::Error::missing_field("chunk"))?,
                    chunks: chunks.ok_or_else(|| A::Error::missing_field("chunks"))?,
                    attempts: attempts.ok_or_else(|| A::Error::missing_field("attempts"))?,
                    reply,
                })
            }
        }
        d.deserialize_map(V)
    }
}

impl CheckReply {
    pub fn check(&self) -> Check {
        match self {
            CheckReply::Enterprise(_) => Check::Enterprise,
            CheckReply::SocialInsurance(_) => Check::SocialInsurance,
            CheckReply::Presence(_) => Check::Presence,
            CheckReply::ResidencePermit(_) => Check::ResidencePermit,
            CheckReply::Telecom(_) => Check::Telecom,
            CheckReply::Statistics(_) => Check::Statistics,
            CheckReply::ExitEntry(_) => Check::ExitEntry,
            CheckReply::PriorBenefits(_) => Check::PriorBenefits,
        }
    }

    /// Joins the next chunk's reply to this one (person lists concatenate, in chunk order);
    /// an applicant check has one chunk, so a second is ignored.
    pub fn merge(&mut self, next: CheckReply) -> Result<(), String> {
        match (self, next) {
            (CheckReply::SocialInsurance(a), CheckReply::SocialInsurance(b)) => {
                a.persons.extend(b.persons)
            }
            (CheckReply::Presence(a), CheckReply::Presence(b)) => a.persons.extend(b.persons),
            (CheckReply::ResidencePermit(a), CheckReply::ResidencePermit(b)) => {
                a.persons.extend(b.persons)
            }
            (CheckReply::Telecom(a), CheckReply::Telecom(b)) => a.numbers.extend(b.numbers),
            (CheckReply::ExitEntry(a), CheckReply::ExitEntry(b)) => a.persons.extend(b.persons),
            (CheckReply::PriorBenefits(a), CheckReply::PriorBenefits(b)) => {
                a.payments.extend(b.payments)
            }
            (CheckReply::Enterprise(_), CheckReply::Enterprise(_))
            | (CheckReply::Statistics(_), CheckReply::Statistics(_)) => {}
            (a, b) => {
                return Err(format!(
                    "a `{}` reply cannot join a `{}` reply",
                    b.check(),
                    a.check()
                ))
            }
        }
        Ok(())
    }

    /// Puts the (joined) reply in its place in the claim's facts.
    pub fn into_facts(self, facts: &mut Facts) {
        match self {
            CheckReply::Enterprise(r) => facts.enterprise = Some(r),
            CheckReply::SocialInsurance(r) => facts.social_insurance = Some(r),
            CheckReply::Presence(r) => facts.presence = Some(r),
            CheckReply::ResidencePermit(r) => facts.residence_permit = Some(r),
            CheckReply::Telecom(r) => facts.telecom = Some(r),
            CheckReply::Statistics(r) => facts.statistics = Some(r),
            CheckReply::ExitEntry(r) => facts.exit_entry = Some(r),
            CheckReply::PriorBenefits(r) => facts.prior_benefits = Some(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payloads::CheckRecorded;

    #[test]
    fn a_recorded_check_keeps_its_wire_shape_and_reads_typed() {
        let r = CheckRecorded {
            claim_id: "C-1".into(),
            chunk: 0,
            chunks: 2,
            attempts: 1,
            reply: Check::Presence
                .read_reply(br#"{"persons":[{"id_number":"1","stayed_whole_window":true}]}"#)
                .unwrap(),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["check"], "presence");
        assert_eq!(v["reply"]["persons"][0]["stayed_whole_window"], true);
        let back: CheckRecorded = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn a_recorded_check_reads_in_any_field_order_and_names_what_is_wrong() {
        let typed: CheckRecorded = serde_json::from_str(
            r#"{"claim_id":"C-1","chunk":0,"chunks":1,"attempts":2,"check":"telecom","reply":{"numbers":[{"phone":"1","carrier":"mobile","city_code":"0577"}]},"later":1}"#,
        )
        .unwrap();
        // The reply before its check (not how Huiqi writes it) reads the same.
        let reordered: CheckRecorded = serde_json::from_str(
            r#"{"reply":{"numbers":[{"phone":"1","carrier":"mobile","city_code":"0577"}]},"check":"telecom","attempts":2,"chunks":1,"chunk":0,"claim_id":"C-1"}"#,
        )
        .unwrap();
        assert_eq!(typed, reordered);
        assert_eq!(typed.check(), Check::Telecom);
        assert_eq!(typed.attempts, 2);
        let err = |s: &str| {
            serde_json::from_str::<CheckRecorded>(s)
                .unwrap_err()
                .to_string()
        };
        assert!(
            err(r#"{"claim_id":"C-1","chunk":0,"chunks":1,"attempts":1,"reply":{}}"#)
                .contains("missing field `check`")
        );
        assert!(
            err(r#"{"claim_id":"C-1","chunk":0,"chunks":1,"attempts":1,"check":"telecom"}"#)
                .contains("missing field `reply`")
        );
        assert!(err(
            r#"{"chunk":0,"chunks":1,"attempts":1,"check":"telecom","reply":{"numbers":[]}}"#
        )
        .contains("missing field `claim_id`"));
        assert!(err(
            r#"{"claim_id":"C-1","chunk":0,"chunks":1,"attempts":1,"check":"weather","reply":{}}"#
        )
        .contains("unknown variant `weather`"));
        // A reply that does not fit its check is refused, whichever comes first.
        assert!(err(r#"{"claim_id":"C-1","chunk":0,"chunks":1,"attempts":1,"check":"presence","reply":{"numbers":[]}}"#)
            .contains("persons"));
        assert!(err(r#"{"reply":{"numbers":[]},"claim_id":"C-1","chunk":0,"chunks":1,"attempts":1,"check":"presence"}"#)
            .contains("persons"));
        assert!(err(r#"{"claim_id":"C-1","claim_id":"C-2","chunk":0,"chunks":1,"attempts":1,"check":"telecom","reply":{"numbers":[]}}"#)
            .contains("duplicate field `claim_id`"));
    }

    #[test]
    fn replies_are_read_once_and_errors_name_the_problem() {
        assert!(Check::Telecom
            .read_reply(br#"{"error":"down"}"#)
            .unwrap_err()
            .contains("down"));
        // An error beside fields that would read is still the provider's error.
        assert!(Check::Telecom
            .read_reply(br#"{"numbers":[],"error":"partial outage"}"#)
            .unwrap_err()
            .contains("partial outage"));
        // A field value that merely says "error" is not one.
        assert!(Check::Telecom
            .read_reply(
                br#"{"numbers":[{"phone":"\"error\"","carrier":"mobile","city_code":"0577"}]}"#
            )
            .is_ok());
        assert!(Check::Presence
            .read_reply(br#"{"persons":[{"id_number":1}]}"#)
            .is_err());
        let mut a = Check::Telecom
            .read_reply(br#"{"numbers":[{"phone":"1","carrier":"mobile","city_code":"0577"}]}"#)
            .unwrap();
        let b = Check::Telecom
            .read_reply(br#"{"numbers":[{"phone":"2","carrier":"mobile","city_code":"0577"}]}"#)
            .unwrap();
        a.merge(b).unwrap();
        let mut facts = Facts::default();
        a.into_facts(&mut facts);
        assert_eq!(facts.telecom.unwrap().numbers.len(), 2);
        assert!(Check::from_name("presence") == Some(Check::Presence));
    }
}
