//! The machine-readable contract: a JSON Schema (draft 2020-12) for the `data` of every event
//! type and for every check and treasury reply, generated from the Rust types that encode and
//! decode them, and an AsyncAPI 3 document naming each subject, its direction and the schema of
//! its messages.
//!
//! Why generated: a portal or bureau team reads the schemas, the services read the types; if
//! both came from hand-kept copies they would drift. `huiqi contract --out docs/contract`
//! writes the files; a test keeps the committed copy equal to this rendering and validates the
//! sample applications and the events of a real run against them.

use crate::payloads as p;
use crate::subjects as s;
use crate::types as t;
use schemars::{schema_for, Schema};
use serde_json::{json, Value};

/// The `data` schema of every event type this build produces, by CloudEvents `type`.
pub fn event_data_schemas() -> Vec<(&'static str, Schema)> {
    vec![
        (t::APPLICATION_SUBMITTED, schema_for!(p::Application)),
        (t::INTAKE_ACCEPTED, schema_for!(p::IntakeAccepted)),
        (t::INTAKE_REJECTED, schema_for!(p::IntakeRejected)),
        (t::CLAIM_OPENED, schema_for!(p::ClaimOpened)),
        (t::CHECK_RECORDED, schema_for!(p::CheckRecorded)),
        (t::CLAIM_VERIFIED, schema_for!(p::ClaimVerified)),
        (t::AWARD_DECIDED, schema_for!(p::AwardDecision)),
        (t::AWARD_SUPPLEMENTED, schema_for!(p::AwardSupplement)),
        (t::COUNTED_ELSEWHERE, schema_for!(p::CountedElsewhere)),
        (t::PAYMENT_ORDERED, schema_for!(p::PaymentOrdered)),
        (t::PAYMENT_ATTEMPTED, schema_for!(p::PaymentAttempted)),
        (t::PAYOUT_SETTLED, schema_for!(p::PayoutSettled)),
        (t::PAYOUT_FAILED, schema_for!(p::PayoutFailed)),
        (
            t::ENTITLEMENT_DATA_PACKAGE,
            schema_for!(p::DataPackageEntitlement),
        ),
        (
            t::ENTITLEMENT_RESIDENT_POINTS,
            schema_for!(p::ResidentPointsEntitlement),
        ),
        (t::MESSAGE_PARKED, schema_for!(p::MessageParked)),
        (t::EVENT_UNPUBLISHABLE, schema_for!(p::EventUnpublishable)),
        (t::RECORD_SKIPPED, schema_for!(p::RecordSkipped)),
        (t::LOG_HEAD, schema_for!(p::LogHead)),
    ]
}

/// The reply schema of every request/reply subject (check providers and the treasury), by the
/// file name it is written under.
pub fn reply_schemas() -> Vec<(&'static str, Schema)> {
    vec![
        ("check.enterprise.reply", schema_for!(p::EnterpriseReply)),
        (
            "check.social_insurance.reply",
            schema_for!(p::SocialInsuranceReply),
        ),
        ("check.presence.reply", schema_for!(p::PresenceReply)),
        (
            "check.residence_permit.reply",
            schema_for!(p::ResidencePermitReply),
        ),
        ("check.telecom.reply", schema_for!(p::TelecomReply)),
        ("check.statistics.reply", schema_for!(p::StatisticsReply)),
        ("check.exit_entry.reply", schema_for!(p::ExitEntryReply)),
        (
            "check.prior_benefits.reply",
            schema_for!(p::PriorBenefitsReply),
        ),
        ("treasury.pay.request", schema_for!(p::TreasuryPay)),
        ("treasury.pay.reply", schema_for!(p::TreasuryReply)),
    ]
}

/// The CloudEvents 1.0 structured-mode envelope every event travels in (CONTRACT.md,
/// "Envelope"); its `data` follows the schema of its `type`.
pub fn envelope_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Huiqi CloudEvent",
        "description": "CloudEvents 1.0, structured mode. `id` is also the NATS header Nats-Msg-Id; events a Huiqi service publishes carry the header Huiqi-Signature: ed25519:<public key>:<base64 signature of the exact payload bytes>.",
        "type": "object",
        "required": ["specversion", "id", "source", "type", "time", "subject", "datacontenttype", "data"],
        "properties": {
            "specversion": { "const": "1.0" },
            "id": { "type": "string", "minLength": 1 },
            "source": { "type": "string", "minLength": 1 },
            "type": { "type": "string", "pattern": "^huiqi\\.[a-z_.]+\\.v[0-9]+$" },
            "time": { "type": "string", "format": "date-time" },
            "subject": { "type": "string" },
            "datacontenttype": { "const": "application/json" },
            "data": {},
            "correlationid": { "type": "string" },
            "causationid": { "type": "string" },
            "policyversion": { "type": "string" }
        }
    })
}

/// The check requests (built in `checks::Check::request`), one schema per check.
fn check_request_schema(check: crate::checks::Check) -> Value {
    use crate::checks::Check;
    let ids = json!({ "type": "array", "items": { "type": "string" } });
    let date = json!({ "type": "string", "format": "date" });
    let (props, required): (Value, Vec<&str>) = match check {
        Check::Enterprise | Check::Statistics => {
            (json!({ "uscc": { "type": "string" } }), vec!["uscc"])
        }
        Check::SocialInsurance => (
            json!({ "uscc": { "type": "string" }, "id_numbers": ids }),
            vec!["uscc", "id_numbers"],
        ),
        Check::Presence | Check::ExitEntry => (
            json!({ "id_numbers": ids, "from": date, "to": date }),
            vec!["id_numbers", "from", "to"],
        ),
        Check::ResidencePermit => (json!({ "id_numbers": ids }), vec!["id_numbers"]),
        Check::Telecom => (json!({ "phones": ids }), vec!["phones"]),
        Check::PriorBenefits => (
            json!({ "uscc": { "type": "string" }, "measure": { "type": "string" }, "id_numbers": ids }),
            vec!["uscc", "measure", "id_numbers"],
        ),
    };
    json!({ "type": "object", "required": required, "properties": props })
}

/// One AsyncAPI channel: address, what travels on it and whether Huiqi sends or receives it.
struct Channel {
    id: String,
    address: String,
    description: &'static str,
    /// Event type (CloudEvent on the stream) or a reply/request schema file.
    messages: Vec<String>,
    action: &'static str,
}

fn channels() -> Vec<Channel> {
    let mut out = vec![
        Channel {
            id: "applicationsSubmitted".into(),
            address: s::APPLICATIONS_SUBMITTED.into(),
            description: "Portals publish applications (JetStream-captured; wait for the publish ack). Portal-scoped form: huiqi.applications.submitted.<portal>, answered on huiqi.intake.*.<portal>.",
            messages: vec![t::APPLICATION_SUBMITTED.into()],
            action: "receive",
        },
        Channel {
            id: "intakeAccepted".into(),
            address: s::INTAKE_ACCEPTED.into(),
            description: "Answer to an application: its claim id. `causationid` is the submitted event's id.",
            messages: vec![t::INTAKE_ACCEPTED.into()],
            action: "send",
        },
        Channel {
            id: "intakeRejected".into(),
            address: s::INTAKE_REJECTED.into(),
            description: "Answer to an application that cannot be accepted: field, code and message per problem. `causationid` is the submitted event's id (also for unreadable input).",
            messages: vec![t::INTAKE_REJECTED.into()],
            action: "send",
        },
        Channel {
            id: "awardsApproved".into(),
            address: format!("{}.{{measure}}", s::AWARDS_APPROVED_PREFIX),
            description: "Exactly one per claim when its decision is final (approved).",
            messages: vec![t::AWARD_DECIDED.into()],
            action: "send",
        },
        Channel {
            id: "awardsRejected".into(),
            address: format!("{}.{{measure}}", s::AWARDS_REJECTED_PREFIX),
            description: "Exactly one per claim when its decision is final (rejected).",
            messages: vec![t::AWARD_DECIDED.into()],
            action: "send",
        },
        Channel {
            id: "awardsSupplemented".into(),
            address: format!("{}.{{measure}}", s::AWARDS_SUPPLEMENTED_PREFIX),
            description: "A supplementary award: a decided claim re-decided under a later policy version by an operator's `huiqi supplement`; the difference is paid once under its own award id.",
            messages: vec![t::AWARD_SUPPLEMENTED.into()],
            action: "send",
        },
        Channel {
            id: "payoutsSettled".into(),
            address: s::PAYOUTS_SETTLED.into(),
            description: "The treasury settled an award; a settled award is never paid again.",
            messages: vec![t::PAYOUT_SETTLED.into()],
            action: "send",
        },
        Channel {
            id: "payoutsFailed".into(),
            address: s::PAYOUTS_FAILED.into(),
            description: "The treasury refused an award, with its reason.",
            messages: vec![t::PAYOUT_FAILED.into()],
            action: "send",
        },
        Channel {
            id: "entitlementsDataPackage".into(),
            address: s::ENTITLEMENT_DATA_PACKAGE.into(),
            description: "M4 data packages: one event per claim and carrier, at most 500 grants an event.",
            messages: vec![t::ENTITLEMENT_DATA_PACKAGE.into()],
            action: "send",
        },
        Channel {
            id: "entitlementsResidentPoints".into(),
            address: s::ENTITLEMENT_RESIDENT_POINTS.into(),
            description: "M5 new-resident points: one event per claim, at most 500 grants an event.",
            messages: vec![t::ENTITLEMENT_RESIDENT_POINTS.into()],
            action: "send",
        },
        Channel {
            id: "treasuryPay".into(),
            address: s::TREASURY_PAY.into(),
            description: "Request/reply to the treasury, idempotent by award_id.",
            messages: vec!["treasury.pay.request".into(), "treasury.pay.reply".into()],
            action: "send",
        },
        Channel {
            id: "parked".into(),
            address: format!("{}.{{service}}", s::PARKED_PREFIX),
            description: "Messages a service refused (unsigned, untrusted, unreadable), with the reason; and events too large to publish.",
            messages: vec![t::MESSAGE_PARKED.into(), t::EVENT_UNPUBLISHABLE.into()],
            action: "send",
        },
        Channel {
            id: "logHeads".into(),
            address: format!("{}.{{service}}", s::HEADS_PREFIX),
            description: "Each service's log head (sequence and chain hash), signed, published now and then: auditors check the service logs against them.",
            messages: vec![t::LOG_HEAD.into()],
            action: "send",
        },
    ];
    for check in crate::checks::Check::ALL {
        let req = format!("check.{}.request", check.name());
        let rep = format!("check.{}.reply", check.name());
        out.push(Channel {
            id: req.clone(),
            address: s::check_subject(check.name()),
            description: "Request/reply to a check provider (NATS core, not captured by the stream). A reply {\"error\": …} is retried.",
            messages: vec![req, rep],
            action: "send",
        });
    }
    out
}

/// The schema files of the contract: `(file name, JSON)`, events by type, replies and requests
/// by name, and the envelope.
pub fn schema_files() -> Vec<(String, Value)> {
    let mut out = vec![("envelope.json".to_string(), envelope_schema())];
    for (ty, schema) in event_data_schemas() {
        out.push((format!("{ty}.json"), schema.to_value()));
    }
    for (name, schema) in reply_schemas() {
        out.push((format!("{name}.json"), schema.to_value()));
    }
    for check in crate::checks::Check::ALL {
        let mut v = check_request_schema(*check);
        v["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
        v["title"] = json!(format!("{} request", check.name()));
        out.push((format!("check.{}.request.json", check.name()), v));
    }
    out
}

/// The AsyncAPI 3.0 document: one channel per subject, one message per schema file (event
/// messages wrap the data schema in the envelope), and Huiqi's operations on them.
pub fn asyncapi() -> Value {
    let mut channels_v = serde_json::Map::new();
    let mut operations = serde_json::Map::new();
    let mut messages = serde_json::Map::new();
    for ch in channels() {
        let mut ch_msgs = serde_json::Map::new();
        for m in &ch.messages {
            let key = m.replace('.', "_");
            let payload = if m.starts_with("huiqi.") {
                json!({ "allOf": [
                    { "$ref": "schemas/envelope.json" },
                    { "properties": { "type": { "const": m }, "data": { "$ref": format!("schemas/{m}.json") } } }
                ] })
            } else {
                json!({ "$ref": format!("schemas/{m}.json") })
            };
            messages.insert(
                key.clone(),
                json!({ "name": m, "contentType": "application/json", "payload": payload }),
            );
            ch_msgs.insert(
                key.clone(),
                json!({ "$ref": format!("#/components/messages/{key}") }),
            );
        }
        channels_v.insert(
            ch.id.clone(),
            json!({ "address": ch.address, "description": ch.description, "messages": ch_msgs }),
        );
        operations.insert(
            format!("{}_{}", ch.action, ch.id),
            json!({
                "action": ch.action,
                "channel": { "$ref": format!("#/channels/{}", ch.id) },
            }),
        );
    }
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Huiqi (惠企) subsidy claims",
            "version": "2026-11-27",
            "description": "Subjects, events and request/reply messages of Huiqi on NATS JetStream (stream HUIQI). Money is a string with two decimals, dates YYYY-MM-DD, timestamps RFC 3339 with offset. See docs/CONTRACT.md."
        },
        "defaultContentType": "application/json",
        "servers": {
            "nats": { "host": "localhost:4222", "protocol": "nats", "description": "NATS with JetStream; nkey authentication per user (see deploy/nats-server.conf)." }
        },
        "channels": channels_v,
        "operations": operations,
        "components": { "messages": messages }
    })
}
