//! Intake: the only door for portal applications.
//!
//! Why it exists as a service of its own: everything downstream may assume a well-formed,
//! in-period application with valid national identifiers and bounded sizes, opened as exactly
//! one claim. Intake reads `huiqi.applications.submitted` and answers **every message on the
//! stream exactly once** — `huiqi.intake.accepted` with the claim id or `huiqi.intake.rejected`
//! with field-level errors, malformed JSON included — and opens the claim
//! (`huiqi.internal.claims.opened`).
//!
//! One message, one answer: the inbox key of a message is its CloudEvent id *and* its stream
//! sequence, so a redelivery of the same message is a no-op while a re-send (any event id,
//! even one another application used) is a new message with its own answer (POLICY.md ruling
//! 9). The claim id derives from the application id; the same content re-sent gets the same
//! claim, different content under an application id that has a claim is refused with
//! `application_id_conflict`, and an application refused at intake may be corrected and sent
//! again. Every answer's event id derives from the message it answers.

pub mod validate;

use huiqi_bus::consumer::{BatchHandler, Delivery, Disposition, Handled, Signatures};
use huiqi_bus::restore::{Consumed, RestoreRules};
use huiqi_bus::service::{self, parked, Consuming, Core, ServiceConfig};
use huiqi_bus::BusError;
use huiqi_eventlog::{Commit, Pending};
use huiqi_events::payloads::{
    Application, ClaimOpened, FieldError, IntakeAccepted, IntakeRejected,
};
use huiqi_events::{escape_control, subjects, types, Envelope};
use huiqi_policy::PolicySet;
use std::collections::HashMap;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "intake";

/// Namespace for claim ids: `C-` + UUIDv5(namespace, application id).
const CLAIM_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6875_6971_692d_636c_6169_6d2d_6964_7331);

pub fn claim_id_for(application_id: &str) -> String {
    format!(
        "C-{}",
        uuid::Uuid::new_v5(&CLAIM_NAMESPACE, application_id.as_bytes())
    )
}

/// The key of one submitted message: its CloudEvent id and where the stream stored it. Its
/// inbox mark and the cause its answer's id derives from.
pub fn message_key(event_id: &str, stream_sequence: u64) -> String {
    format!("{event_id}@{stream_sequence}")
}

/// The key of a submitted message as received: [`message_key`] when it carries an event id,
/// else the stream sequence alone (unreadable bytes). The handler and the restore both use it.
pub fn message_key_of(payload: &[u8], stream_sequence: u64) -> String {
    #[derive(serde::Deserialize)]
    struct Id<'a> {
        #[serde(borrow)]
        id: std::borrow::Cow<'a, str>,
    }
    match serde_json::from_slice::<Id>(payload) {
        Ok(i) if !i.id.trim().is_empty() => message_key(&i.id, stream_sequence),
        _ => format!("stream-seq-{stream_sequence}"),
    }
}

/// The ids the answer to a message would have (accepted or rejected): the proof, when
/// restoring intake's log, that a message was answered.
pub fn answer_ids(key: &str) -> Vec<String> {
    [types::INTAKE_ACCEPTED, types::INTAKE_REJECTED]
        .iter()
        .map(|t| huiqi_events::derived_id(SERVICE, key, t, "0"))
        .collect()
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub service: ServiceConfig,
    /// Most persons one application may name (larger rosters are rejected, not processed).
    pub max_persons: usize,
    /// Largest application message accepted, in bytes: every event derived from an accepted
    /// application must fit the server's 8 MB `max_payload` (README, "Limits").
    pub max_application_bytes: usize,
}

impl Settings {
    pub fn new(service: ServiceConfig) -> Self {
        Settings {
            service,
            max_persons: 20_000,
            max_application_bytes: 4 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("event log: {0}")]
    Log(#[from] huiqi_eventlog::LogError),
    #[error("policy: {0}")]
    Policy(#[from] huiqi_policy::PolicyError),
}

/// An application id that has a claim: the claim and the digest of the accepted content.
#[derive(Debug, Clone)]
struct Opened {
    claim_id: String,
    digest: String,
}

/// Intake's state: a fold over its log.
#[derive(Default)]
struct State {
    claims: HashMap<String, Opened>,
}

impl State {
    fn apply(&mut self, env: &Envelope) -> Result<(), String> {
        if env.ty == types::CLAIM_OPENED {
            let o: ClaimOpened = service::data(env)?;
            let digest = if o.application_digest.is_empty() {
                o.application.digest()
            } else {
                o.application_digest
            };
            self.claims
                .entry(o.application.application_id)
                .or_insert(Opened {
                    claim_id: o.claim_id,
                    digest,
                });
        }
        Ok(())
    }
}

pub struct App {
    service: Consuming<Handler>,
}

pub async fn build(settings: Settings) -> Result<App, IntakeError> {
    let core = Core::start(SERVICE, &settings.service, &Restore {}).await?;
    let mut state = State::default();
    core.fold(|rec| state.apply(&rec.envelope))?;
    let spec = core.consumer_spec();
    let handler = Handler {
        writer: core.writer.clone(),
        state,
        policies: PolicySet::load(settings.service.policy_dir.as_deref())?,
        max_persons: settings.max_persons,
        max_application_bytes: settings.max_application_bytes,
        partitions: settings.service.partition.count(),
    };
    Ok(App {
        service: Consuming::new(core, spec, handler, Signatures::Optional).await?,
    })
}

impl App {
    /// The service's event log (for the operator query responder and audits in-process).
    pub fn log(&self) -> std::sync::Arc<huiqi_eventlog::EventLog> {
        self.service.log()
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), IntakeError> {
        let idle = async { Ok(()) };
        self.service.run(idle, shutdown).await?;
        Ok(())
    }
}

/// How intake's log is rebuilt from the stream: a message's inbox mark goes back only with its
/// answer; a message without an answer on the stream is delivered again and answered then.
pub struct Restore;

impl RestoreRules for Restore {
    fn signatures(&self) -> Signatures {
        Signatures::Optional
    }

    fn consumed(&self, payload: &[u8], _env: Option<&Envelope>, stream_seq: u64) -> Consumed {
        let key = message_key_of(payload, stream_seq);
        Consumed::InboxIfAnswered {
            proofs: answer_ids(&key),
            inbox: key,
        }
    }

    /// An accepted reply counts only with an opened claim for its claim on the stream (the
    /// first message of an application opened it; a re-sent one's reply names the same claim).
    fn requires(&self, proof: &Envelope) -> Option<String> {
        if proof.ty != types::INTAKE_ACCEPTED {
            return None;
        }
        let accepted: IntakeAccepted = proof.data_as().ok()?;
        Some(format!("opened:{}", accepted.claim_id))
    }

    fn provides(&self, produced: &Envelope) -> Option<String> {
        (produced.ty == types::CLAIM_OPENED).then(|| format!("opened:{}", produced.subject))
    }
}

struct Handler {
    writer: huiqi_bus::LogWriter,
    state: State,
    policies: PolicySet,
    max_persons: usize,
    max_application_bytes: usize,
    /// The deployment's partitions: each opened claim goes to its applicant's.
    partitions: u16,
}

/// The outcome of reading one message.
enum Reading {
    Application(Box<Envelope>, Box<Application>),
    Bad {
        application_id: String,
        cause: Option<Box<Envelope>>,
        errors: Vec<FieldError>,
    },
}

fn read(d: &Delivery, max_bytes: usize) -> Reading {
    let app_id_guess = || {
        serde_json::from_slice::<serde_json::Value>(&d.payload)
            .ok()
            .and_then(|v| v["data"]["application_id"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    if d.payload.len() > max_bytes {
        return Reading::Bad {
            application_id: app_id_guess(),
            cause: None,
            errors: vec![FieldError::new(
                "$",
                "too_large",
                format!(
                    "the application is {} bytes; at most {max_bytes} are accepted (every event derived from it must fit a NATS message) — split the roster into several applications",
                    d.payload.len()
                ),
            )],
        };
    }
    if let Err(e) = &d.signer {
        return Reading::Bad {
            application_id: app_id_guess(),
            cause: None,
            errors: vec![FieldError::new(
                huiqi_bus::trust::SIGNATURE_HEADER,
                "signature_invalid",
                format!("the portal's signature is not accepted: {e}"),
            )],
        };
    }
    let env = match Envelope::decode(&d.payload) {
        Ok(env) => env,
        Err(e) => {
            let field = match &e {
                huiqi_events::EnvelopeError::Field { field, .. } => (*field).to_string(),
                _ => "$".into(),
            };
            return Reading::Bad {
                application_id: app_id_guess(),
                cause: None,
                errors: vec![FieldError::new(
                    field,
                    "malformed",
                    huiqi_events::mask_digit_runs(&format!("not a valid CloudEvent: {e}")),
                )],
            };
        }
    };
    if env.ty != types::APPLICATION_SUBMITTED {
        return Reading::Bad {
            application_id: app_id_guess(),
            errors: vec![FieldError::new(
                "type",
                "malformed",
                format!(
                    "expected `{}`, got `{}`",
                    types::APPLICATION_SUBMITTED,
                    escape_control(&env.ty)
                ),
            )],
            cause: Some(Box::new(env)),
        };
    }
    match serde_path_to_error::deserialize::<_, Application>(
        &mut serde_json::Deserializer::from_str(env.data.get()),
    ) {
        Ok(app) => Reading::Application(Box::new(env), Box::new(app)),
        Err(e) => {
            let path = e.path().to_string();
            let message = e.inner().to_string();
            Reading::Bad {
                application_id: app_id_guess(),
                errors: vec![FieldError::new(
                    if path == "." {
                        "data".to_string()
                    } else {
                        path
                    },
                    "schema",
                    huiqi_events::mask_digit_runs(&message),
                )],
                cause: Some(Box::new(env)),
            }
        }
    }
}

/// An application id fit to name the reply's subject: readable and bounded, else empty.
fn reply_subject(application_id: &str) -> &str {
    if validate::check_application_id(application_id).is_ok() {
        application_id
    } else {
        ""
    }
}

/// An application id as a log line shows it: at most 128 characters, digit runs masked; the
/// log formatter escapes any control character in it.
fn shown(id: &str) -> String {
    huiqi_events::mask_digit_runs(&id.chars().take(128).collect::<String>())
}

/// The portal a message came from, by the subject it was published on: a portal publishing on
/// `huiqi.applications.submitted.<portal>` (its login may publish only there) is answered on
/// `huiqi.intake.accepted.<portal>` / `huiqi.intake.rejected.<portal>`, where its own durable
/// consumer reads exactly its answers. The contract's bare subject is answered on the bare
/// reply subjects.
pub fn portal_of(subject: &str) -> Option<&str> {
    subject
        .strip_prefix(subjects::APPLICATIONS_SUBMITTED)
        .and_then(|rest| rest.strip_prefix('.'))
        .filter(|p| huiqi_events::subjects::valid_portal(p))
}

fn reply_to(base: &str, portal: Option<&str>) -> String {
    match portal {
        Some(p) => format!("{base}.{p}"),
        None => base.to_string(),
    }
}

/// The acceptance of the message `key`: its answer, filed under the application id.
fn accept(
    key: &str,
    application_id: &str,
    claim_id: &str,
    cause: &Envelope,
    portal: Option<&str>,
) -> Pending {
    let data = IntakeAccepted {
        application_id: application_id.to_string(),
        claim_id: claim_id.to_string(),
    };
    let e = Envelope::derived(
        SERVICE,
        types::INTAKE_ACCEPTED,
        application_id,
        &data,
        key,
        "0",
    )
    .expect("serializes")
    .caused_by(cause);
    metrics::counter!("huiqi_applications_answered_total", "outcome" => "accepted").increment(1);
    Pending::publish(e, reply_to(subjects::INTAKE_ACCEPTED, portal))
}

impl Handler {
    fn reject(
        &self,
        key: &str,
        application_id: &str,
        errors: Vec<FieldError>,
        cause: Option<&Envelope>,
        d: &Delivery,
    ) -> Pending {
        let subject = match reply_subject(application_id) {
            "" => "unknown",
            s => s,
        };
        let data = IntakeRejected {
            application_id: application_id.to_string(),
            errors,
        };
        let mut env = Envelope::derived(SERVICE, types::INTAKE_REJECTED, subject, &data, key, "0")
            .expect("serializes");
        match cause {
            Some(c) => env = env.caused_by(c),
            // Unreadable input: the portal still matches the answer to what it sent by the
            // Nats-Msg-Id it published with (its event id), when that is a plain token.
            None => {
                if let Some(id) = d.msg_id.as_deref().filter(|i| {
                    !i.is_empty() && i.len() <= 128 && i.chars().all(|c| c.is_ascii_graphic())
                }) {
                    env.causationid = Some(id.to_string());
                    env.correlationid = Some(id.to_string());
                }
            }
        }
        metrics::counter!("huiqi_applications_answered_total", "outcome" => "rejected")
            .increment(1);
        Pending::publish(
            env,
            reply_to(subjects::INTAKE_REJECTED, portal_of(&d.subject)),
        )
    }

    /// The answer to one message, or None when this message was answered before (a
    /// redelivery after a lost ack).
    fn decide(&mut self, d: &Delivery) -> Result<Option<Commit>, huiqi_eventlog::LogError> {
        let reading = read(d, self.max_application_bytes);
        let key = match &reading {
            Reading::Application(env, _)
            | Reading::Bad {
                cause: Some(env), ..
            } => message_key(&env.id, d.stream_sequence),
            Reading::Bad { cause: None, .. } => d.stream_key(),
        };
        if self.writer.log().is_processed(&key)? {
            return Ok(None);
        }
        Ok(Some(match reading {
            Reading::Bad {
                application_id,
                cause,
                errors,
            } => {
                tracing::warn!(
                    stream_seq = d.stream_sequence,
                    application_id = %shown(&application_id),
                    field = %errors[0].field,
                    code = %errors[0].code,
                    "application rejected: unreadable"
                );
                Commit {
                    events: vec![self.reject(&key, &application_id, errors, cause.as_deref(), d)],
                    inbox_id: Some(key),
                }
            }
            Reading::Application(env, app) => {
                let id = app.application_id.clone();
                let digest = app.digest();
                let mut events = Vec::new();
                match self.state.claims.get(&id) {
                    Some(opened) if opened.digest == digest => {
                        events.push(accept(
                            &key,
                            &id,
                            &opened.claim_id,
                            &env,
                            portal_of(&d.subject),
                        ));
                        tracing::info!(application_id = %escape_control(&id), claim_id = %opened.claim_id, "re-sent application: same answer");
                    }
                    Some(opened) => {
                        let claim = opened.claim_id.clone();
                        tracing::warn!(application_id = %escape_control(&id), claim_id = %claim, "different content under an application id that has a claim: refused");
                        events.push(self.reject(
                            &key,
                            &id,
                            vec![FieldError::new(
                                "application_id",
                                "application_id_conflict",
                                format!(
                                    "application id already names claim {claim} with different content; an application id names one application (send a new id for a new application)"
                                ),
                            )],
                            Some(&env),
                            d,
                        ));
                    }
                    None => {
                        let errors = validate::validate(&app, &self.policies, self.max_persons);
                        if errors.is_empty() {
                            let claim_id = claim_id_for(&id);
                            tracing::info!(application_id = %escape_control(&id), %claim_id, correlation_id = %escape_control(env.correlationid.as_deref().unwrap_or(&env.id)), causation_id = %escape_control(&env.id), measure = %escape_control(&app.measure), persons = app.person_ids().len(), "claim opened");
                            // Every claim of one applicant in one partition, so the per-
                            // enterprise rules stay inside one worker's history.
                            let partition = huiqi_events::Partition::of_applicant(
                                &app.applicant.uscc,
                                self.partitions,
                            );
                            let opened = ClaimOpened {
                                claim_id: claim_id.clone(),
                                application: *app,
                                application_digest: digest.clone(),
                            };
                            let e = Envelope::derived(
                                SERVICE,
                                types::CLAIM_OPENED,
                                &claim_id,
                                &opened,
                                &key,
                                "0",
                            )
                            .expect("serializes")
                            .caused_by(&env);
                            events.push(Pending::publish(
                                e,
                                partition.subject(subjects::CLAIM_OPENED),
                            ));
                            // The reply last: a rebuild counts the application answered when
                            // its reply is on the stream, and the relay publishes a commit's
                            // events in order, so the opened claim is there before it.
                            events.push(accept(&key, &id, &claim_id, &env, portal_of(&d.subject)));
                            self.state.claims.insert(id, Opened { claim_id, digest });
                        } else {
                            tracing::info!(application_id = %shown(&id), errors = errors.len(), first = %errors[0].code, "application rejected");
                            events.push(self.reject(&key, &id, errors, Some(&env), d));
                        }
                    }
                }
                Commit {
                    inbox_id: Some(key),
                    events,
                }
            }
        }))
    }
}

impl BatchHandler for Handler {
    async fn handle(&mut self, batch: Vec<Delivery>) -> Result<Handled, BusError> {
        let mut commits = Vec::with_capacity(batch.len());
        let mut dispositions = Vec::with_capacity(batch.len());
        for d in &batch {
            // Reading and validating cannot fail in a way a retry would fix; a panic in a
            // validator would be a bug, so it is caught and the message parked, not retried.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.decide(d)));
            match outcome {
                Ok(c) => {
                    commits.extend(c?);
                    dispositions.push(Disposition::Ack);
                }
                Err(_) => {
                    tracing::error!(
                        stream_seq = d.stream_sequence,
                        "intake panicked on a message; parked"
                    );
                    commits.push(Commit {
                        inbox_id: Some(d.stream_key()),
                        events: vec![parked(
                            SERVICE,
                            d,
                            "intake panicked while reading this message",
                        )],
                    });
                    dispositions.push(Disposition::Term);
                }
            }
        }
        Ok(Handled::new(commits, dispositions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_ids_are_stable_per_application() {
        assert_eq!(claim_id_for("P-1"), claim_id_for("P-1"));
        assert_ne!(claim_id_for("P-1"), claim_id_for("P-2"));
        assert!(claim_id_for("P-1").starts_with("C-"));
    }

    #[test]
    fn answers_derive_from_the_stream_message() {
        let a = answer_ids(&message_key("ev-1", 7));
        assert_eq!(a, answer_ids(&message_key("ev-1", 7)));
        assert_ne!(
            a,
            answer_ids(&message_key("ev-1", 8)),
            "a re-send is answered anew"
        );
    }
}
