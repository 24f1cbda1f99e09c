//! `huiqi.query.claim`: an operator asks for one claim by `claim_id` or `application_id` and
//! gets its state and timeline, merged from every service's log (the per-subject index makes
//! this a few prefix scans). The answer names events, times, checks, statuses and amounts —
//! no ID numbers, phones or accounts.

use huiqi_eventlog::{EventLog, Record};
use huiqi_events::{subjects, types};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// One line of a claim's timeline.
fn summary(r: &Record) -> Value {
    let e = &r.envelope;
    let d = &e.data.value();
    let detail = match e.ty.as_str() {
        types::INTAKE_ACCEPTED => json!({ "claim_id": d["claim_id"] }),
        types::INTAKE_REJECTED => {
            json!({ "errors": d["errors"].as_array().map(|a| a.iter().map(|x| json!({ "field": x["field"], "code": x["code"] })).collect::<Vec<_>>()) })
        }
        types::CLAIM_OPENED => json!({ "measure": d["application"]["measure"] }),
        types::CHECK_RECORDED => {
            json!({ "check": d["check"], "chunk": d["chunk"], "chunks": d["chunks"], "attempts": d["attempts"] })
        }
        types::CLAIM_VERIFIED => json!({ "checks": d["checks"] }),
        types::AWARD_DECIDED => {
            json!({ "status": d["status"], "total": d["total"], "policy_version": d["policy_version"], "lines": d["lines"].as_array().map(Vec::len) })
        }
        types::PAYMENT_ORDERED => json!({ "award_id": d["award_id"], "amount": d["amount"] }),
        types::PAYMENT_ATTEMPTED => json!({ "award_id": d["award_id"], "attempt": d["attempt"] }),
        types::PAYOUT_SETTLED => {
            json!({ "amount": d["amount"], "bank_reference": d["bank_reference"] })
        }
        types::PAYOUT_FAILED => json!({ "amount": d["amount"], "reason": d["reason"] }),
        _ => json!({}),
    };
    json!({ "time": e.time, "source": e.source, "type": e.ty, "event_id": e.id, "detail": detail })
}

/// The state a claim is in, from the last decisive event of its timeline.
fn state_of(timeline: &[Record]) -> &'static str {
    let has = |t: &str| timeline.iter().any(|r| r.envelope.ty == t);
    let decided = timeline
        .iter()
        .find(|r| r.envelope.ty == types::AWARD_DECIDED);
    if has(types::PAYOUT_SETTLED) {
        "settled"
    } else if has(types::PAYOUT_FAILED) {
        "payment_failed"
    } else if let Some(d) = decided {
        if d.envelope.data.value()["status"] == "approved" {
            "approved_awaiting_payment"
        } else {
            "rejected"
        }
    } else if has(types::CLAIM_VERIFIED) {
        "verified_awaiting_decision"
    } else if has(types::CLAIM_OPENED) {
        "verifying"
    } else if has(types::INTAKE_REJECTED) && !has(types::INTAKE_ACCEPTED) {
        "rejected_at_intake"
    } else {
        "unknown"
    }
}

/// Answers one query from the logs.
pub fn answer(logs: &[Arc<EventLog>], request: &Value) -> Value {
    let application_id = request["application_id"].as_str().map(str::to_string);
    let claim_id = match (request["claim_id"].as_str(), &application_id) {
        (Some(c), _) => c.to_string(),
        (None, Some(a)) => huiqi_intake::claim_id_for(a),
        (None, None) => return json!({ "error": "request needs `claim_id` or `application_id`" }),
    };
    let mut records = Vec::new();
    for log in logs {
        let mut subjects = vec![claim_id.clone()];
        if let Some(a) = &application_id {
            subjects.push(a.clone());
        }
        for s in subjects {
            match log.subject_records(&s) {
                Ok(r) => records.extend(r),
                Err(e) => return json!({ "error": format!("reading a log: {e}") }),
            }
        }
    }
    // Intake's replies are filed under the application id; find it from the opening if asked by claim.
    if application_id.is_none() {
        if let Some(a) = records.iter().find_map(|r| {
            r.envelope.data.value()["application"]["application_id"]
                .as_str()
                .map(str::to_string)
        }) {
            for log in logs {
                if let Ok(r) = log.subject_records(&a) {
                    records.extend(r);
                }
            }
        }
    }
    records.sort_by(|a, b| {
        a.envelope
            .time
            .cmp(&b.envelope.time)
            .then(a.seq.cmp(&b.seq))
    });
    records.dedup_by(|a, b| a.envelope.id == b.envelope.id);
    if records.is_empty() {
        return json!({ "claim_id": claim_id, "state": "not_found", "timeline": [] });
    }
    json!({
        "claim_id": claim_id,
        "state": state_of(&records),
        "timeline": records.iter().map(summary).collect::<Vec<_>>(),
    })
}

/// Serves `huiqi.query.claim` until `shutdown`.
pub async fn serve(
    client: async_nats::Client,
    logs: Vec<Arc<EventLog>>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    use futures_util::StreamExt;
    let mut sub = client
        .queue_subscribe(subjects::QUERY_CLAIM, "query".to_string())
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            m = sub.next() => match m { Some(m) => m, None => return Ok(()) },
        };
        let Some(reply) = msg.reply else { continue };
        let body = match serde_json::from_slice::<Value>(&msg.payload) {
            Ok(req) => {
                let logs = logs.clone();
                tokio::task::spawn_blocking(move || answer(&logs, &req))
                    .await
                    .unwrap_or_else(|e| json!({ "error": e.to_string() }))
            }
            Err(e) => json!({ "error": format!("unreadable request: {e}") }),
        };
        let _ = client
            .publish(reply, serde_json::to_vec(&body).unwrap_or_default().into())
            .await;
    }
}
