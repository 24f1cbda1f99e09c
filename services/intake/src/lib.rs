//! Intake: the only door for portal applications.
//!
//! Why it exists as a service of its own: everything downstream may assume a well-formed,
//! in-period application with valid national identifiers, opened as exactly one claim. Intake
//! reads `huiqi.applications.submitted`, answers every message — `huiqi.intake.accepted` with
//! the claim id or `huiqi.intake.rejected` with field-level errors, malformed JSON included —
//! and opens the claim (`huiqi.internal.claims.opened`). The claim id is derived from the
//! application id, and the first answer to an application id is kept for ever: a re-sent
//! application (any event id) gets the same answer, never a second claim.

pub mod validate;

use huiqi_bus::consumer::{BatchHandler, ConsumerSpec, Delivery, Disposition};
use huiqi_bus::service::{parked, Consuming, Core};
use huiqi_bus::BusError;
use huiqi_eventlog::{Commit, Pending};
use huiqi_events::payloads::{
    Application, ClaimOpened, FieldError, IntakeAccepted, IntakeRejected,
};
use huiqi_events::{subjects, types, Envelope};
use huiqi_policy::PolicySet;
use std::collections::HashMap;
use std::path::PathBuf;
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

#[derive(Debug, Clone)]
pub struct Settings {
    pub nats_url: String,
    /// This service's own sled directory.
    pub data_dir: PathBuf,
    /// Most persons one application may name (larger rosters are rejected, not processed).
    pub max_persons: usize,
}

impl Settings {
    pub fn new(nats_url: &str, data_dir: PathBuf) -> Self {
        Settings {
            nats_url: nats_url.to_string(),
            data_dir,
            max_persons: 20_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("event log: {0}")]
    Log(#[from] huiqi_eventlog::LogError),
}

/// The answer given to an application id, kept for re-sends.
#[derive(Debug, Clone)]
enum Answer {
    Accepted(String),
    Rejected(Vec<FieldError>),
}

/// Intake's state: a fold over its log.
#[derive(Default)]
struct State {
    answers: HashMap<String, Answer>,
}

impl State {
    fn apply(&mut self, env: &Envelope) {
        match env.ty.as_str() {
            types::INTAKE_ACCEPTED => {
                if let Ok(a) = env.data_as::<IntakeAccepted>() {
                    self.answers
                        .entry(a.application_id)
                        .or_insert(Answer::Accepted(a.claim_id));
                }
            }
            types::INTAKE_REJECTED => {
                if let Ok(r) = env.data_as::<IntakeRejected>() {
                    // Only an application that parsed has an id worth remembering.
                    if !r.application_id.is_empty()
                        && !r.errors.iter().any(|e| e.code == "malformed")
                    {
                        self.answers
                            .entry(r.application_id)
                            .or_insert(Answer::Rejected(r.errors));
                    }
                }
            }
            _ => {}
        }
    }
}

pub struct App {
    service: Consuming<Handler>,
}

pub async fn build(settings: Settings) -> Result<App, IntakeError> {
    let core = Core::start(SERVICE, &settings.nats_url, &settings.data_dir).await?;
    let mut state = State::default();
    for rec in core.log().records_from(1) {
        state.apply(&rec?.envelope);
    }
    let spec = ConsumerSpec::new(SERVICE, subjects::APPLICATIONS_SUBMITTED);
    let handler = Handler {
        writer: core.writer.clone(),
        state,
        policies: PolicySet::builtin(),
        max_persons: settings.max_persons,
    };
    Ok(App {
        service: Consuming::new(core, spec, handler).await?,
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

struct Handler {
    writer: huiqi_bus::LogWriter,
    state: State,
    policies: PolicySet,
    max_persons: usize,
}

/// The outcome of reading one message.
enum Reading {
    Application(Box<Envelope>, Box<Application>),
    Bad {
        inbox_id: String,
        application_id: String,
        cause: Option<Box<Envelope>>,
        errors: Vec<FieldError>,
    },
}

fn read(d: &Delivery) -> Reading {
    let fallback = d.msg_id.clone().unwrap_or_else(|| d.fallback_id());
    let app_id_guess = || {
        serde_json::from_slice::<serde_json::Value>(&d.payload)
            .ok()
            .and_then(|v| v["data"]["application_id"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let env = match Envelope::decode(&d.payload) {
        Ok(env) => env,
        Err(e) => {
            let field = match &e {
                huiqi_events::EnvelopeError::Field { field, .. } => (*field).to_string(),
                _ => "$".into(),
            };
            return Reading::Bad {
                inbox_id: fallback,
                application_id: app_id_guess(),
                cause: None,
                errors: vec![FieldError::new(
                    field,
                    "malformed",
                    format!("not a valid CloudEvent: {e}"),
                )],
            };
        }
    };
    if env.ty != types::APPLICATION_SUBMITTED {
        return Reading::Bad {
            inbox_id: env.id.clone(),
            application_id: app_id_guess(),
            errors: vec![FieldError::new(
                "type",
                "malformed",
                format!(
                    "expected `{}`, got `{}`",
                    types::APPLICATION_SUBMITTED,
                    env.ty
                ),
            )],
            cause: Some(Box::new(env)),
        };
    }
    match serde_path_to_error::deserialize::<_, Application>(&env.data) {
        Ok(app) => Reading::Application(Box::new(env), Box::new(app)),
        Err(e) => {
            let path = e.path().to_string();
            let message = e.inner().to_string();
            Reading::Bad {
                inbox_id: env.id.clone(),
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

impl Handler {
    fn reject(
        &self,
        subject: &str,
        application_id: &str,
        errors: Vec<FieldError>,
        cause: Option<&Envelope>,
    ) -> Pending {
        let data = IntakeRejected {
            application_id: application_id.to_string(),
            errors,
        };
        let subject = if subject.is_empty() {
            "unknown"
        } else {
            subject
        };
        let mut env =
            Envelope::new(SERVICE, types::INTAKE_REJECTED, subject, &data).expect("serializes");
        if let Some(c) = cause {
            env = env.caused_by(c);
        }
        Pending::publish(env, subjects::INTAKE_REJECTED)
    }

    fn decide(&mut self, d: &Delivery) -> Commit {
        match read(d) {
            Reading::Bad {
                inbox_id,
                application_id,
                cause,
                errors,
            } => {
                tracing::warn!(
                    stream_seq = d.stream_sequence,
                    field = %errors[0].field,
                    code = %errors[0].code,
                    "application rejected: unreadable"
                );
                Commit {
                    inbox_id: Some(inbox_id),
                    events: vec![self.reject(
                        &application_id,
                        &application_id,
                        errors,
                        cause.as_deref(),
                    )],
                }
            }
            Reading::Application(env, app) => {
                let id = app.application_id.clone();
                let answer = match self.state.answers.get(&id) {
                    Some(previous) => previous.clone(),
                    None => {
                        let errors = validate::validate(&app, &self.policies, self.max_persons);
                        if errors.is_empty() {
                            Answer::Accepted(claim_id_for(&id))
                        } else {
                            Answer::Rejected(errors)
                        }
                    }
                };
                let first_time = !self.state.answers.contains_key(&id);
                let mut events = Vec::new();
                match &answer {
                    Answer::Accepted(claim_id) => {
                        let accepted = IntakeAccepted {
                            application_id: id.clone(),
                            claim_id: claim_id.clone(),
                        };
                        let e = Envelope::new(SERVICE, types::INTAKE_ACCEPTED, &id, &accepted)
                            .expect("serializes")
                            .caused_by(&env);
                        events.push(Pending::publish(e, subjects::INTAKE_ACCEPTED));
                        if first_time {
                            let opened = ClaimOpened {
                                claim_id: claim_id.clone(),
                                application: (*app).clone(),
                            };
                            let e = Envelope::new(SERVICE, types::CLAIM_OPENED, claim_id, &opened)
                                .expect("serializes")
                                .caused_by(&env);
                            events.push(Pending::publish(e, subjects::CLAIM_OPENED));
                            tracing::info!(application_id = %id, %claim_id, measure = %app.measure, persons = app.person_ids().len(), "claim opened");
                        } else {
                            tracing::info!(application_id = %id, %claim_id, "re-sent application: same answer");
                        }
                    }
                    Answer::Rejected(errors) => {
                        tracing::info!(application_id = %id, errors = errors.len(), first = %errors[0].code, "application rejected");
                        events.push(self.reject(&id, &id, errors.clone(), Some(&env)));
                    }
                }
                for p in &events {
                    self.state.apply(&p.envelope);
                }
                // A portal that lost its reply may re-send the very same event: answer it
                // again (the claim is not opened twice: the answer above came from state).
                let repeat =
                    !first_time && self.writer.log().is_processed(&env.id).unwrap_or(false);
                Commit {
                    inbox_id: (!repeat).then(|| env.id.clone()),
                    events,
                }
            }
        }
    }
}

impl BatchHandler for Handler {
    async fn handle(&mut self, batch: Vec<Delivery>) -> Result<Vec<Disposition>, BusError> {
        let mut commits = Vec::with_capacity(batch.len());
        let mut dispositions = Vec::with_capacity(batch.len());
        for d in &batch {
            // Reading and validating cannot fail in a way a retry would fix; a panic in a
            // validator would be a bug, so it is caught and the message parked, not retried.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.decide(d)));
            match outcome {
                Ok(c) => {
                    commits.push(c);
                    dispositions.push(Disposition::Ack);
                }
                Err(_) => {
                    tracing::error!(
                        stream_seq = d.stream_sequence,
                        "intake panicked on a message; parked"
                    );
                    commits.push(Commit {
                        inbox_id: Some(d.fallback_id()),
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
        self.writer.commit(commits).await?;
        Ok(dispositions)
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
}
