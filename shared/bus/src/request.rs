//! Request/reply to check providers and the treasury: per-attempt timeout, exponential backoff,
//! a circuit that stops hammering a provider that keeps failing, and no give-up by default —
//! a claim waits for its provider rather than being lost. Only shutdown ends the wait.

use async_nats::Client;
use serde_json::Value;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long one request waits for its answer by default: a provider, the treasury, the query
/// responder. The answering users' windows (`access::PROVIDER_ANSWER_WINDOW`) are this long.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub timeout: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// `None`: retry until shutdown.
    pub max_attempts: Option<u32>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            timeout: ATTEMPT_TIMEOUT,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            max_attempts: None,
        }
    }
}

impl RetryPolicy {
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        (self.initial_backoff * factor).min(self.max_backoff)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{subject}: gave up after {attempts} attempts; last error: {last}")]
    GaveUp {
        subject: String,
        attempts: u32,
        last: String,
    },
    #[error("{subject}: shutting down")]
    Shutdown { subject: String },
}

/// Opens after `threshold` consecutive failures; while open, callers wait `open_for` before the
/// next (probe) attempt. One success closes it.
pub struct Circuit {
    threshold: u32,
    open_for: Duration,
    state: Mutex<(u32, Option<Instant>)>,
}

impl Circuit {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Circuit {
            threshold,
            open_for,
            state: Mutex::new((0, None)),
        }
    }

    /// How long to wait before trying, if the circuit is open.
    pub fn wait_time(&self) -> Option<Duration> {
        let st = self.state.lock().expect("circuit lock");
        st.1.and_then(|until| until.checked_duration_since(Instant::now()))
    }

    pub fn is_open(&self) -> bool {
        self.wait_time().is_some()
    }

    pub fn success(&self) {
        *self.state.lock().expect("circuit lock") = (0, None);
    }

    pub fn failure(&self) {
        let mut st = self.state.lock().expect("circuit lock");
        st.0 += 1;
        if st.0 >= self.threshold {
            st.1 = Some(Instant::now() + self.open_for);
        }
    }
}

impl Default for Circuit {
    fn default() -> Self {
        Circuit::new(5, Duration::from_secs(2))
    }
}

/// Sends `body` to `subject` until a reply is accepted: `accept` reads the reply bytes into
/// what the caller needs (the one parse) or says why it does not fit; a timeout, no responders
/// or a refused reply count as failures, with backoff and the circuit. Returns the accepted
/// value and the number of attempts it took.
pub async fn request<T>(
    client: &Client,
    subject: &str,
    body: &[u8],
    policy: &RetryPolicy,
    circuit: &Circuit,
    shutdown: &CancellationToken,
    accept: impl Fn(&[u8]) -> Result<T, String>,
) -> Result<(T, u32), RequestError> {
    let payload = bytes::Bytes::copy_from_slice(body);
    let mut attempt = 0u32;
    loop {
        if let Some(wait) = circuit.wait_time() {
            tokio::select! {
                _ = shutdown.cancelled() => return Err(RequestError::Shutdown { subject: subject.into() }),
                _ = tokio::time::sleep(wait) => {}
            }
        }
        attempt += 1;
        let sent = Instant::now();
        let request = async_nats::Request::new()
            .payload(payload.clone())
            .timeout(Some(policy.timeout));
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return Err(RequestError::Shutdown { subject: subject.into() }),
            r = client.send_request(subject.to_string(), request) => r,
        };
        let last = match outcome {
            Ok(msg) => match accept(&msg.payload) {
                Ok(v) => {
                    circuit.success();
                    crate::health::provider_ok(subject, sent.elapsed());
                    return Ok((v, attempt));
                }
                Err(why) => why,
            },
            Err(e) => e.to_string(),
        };
        circuit.failure();
        crate::health::provider_failed(subject, &last);
        if attempt > 1 {
            metrics::counter!("huiqi_provider_retries_total", "subject" => subject.to_string())
                .increment(1);
        }
        if policy.max_attempts.is_some_and(|max| attempt >= max) {
            return Err(RequestError::GaveUp {
                subject: subject.into(),
                attempts: attempt,
                last,
            });
        }
        let level_warn = attempt == 3 || attempt % 20 == 0;
        let error =
            huiqi_events::escape_control(&huiqi_events::mask_digit_runs(&last)).into_owned();
        if level_warn {
            tracing::warn!(subject, attempt, error = %error, circuit_open = circuit.is_open(), "provider not answering; still retrying");
        } else {
            tracing::debug!(subject, attempt, error = %error, "request failed; backing off");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Err(RequestError::Shutdown { subject: subject.into() }),
            _ = tokio::time::sleep(policy.backoff(attempt)) => {}
        }
    }
}

/// [`request`] with a JSON reply: `{"error": …}` and unreadable JSON are failures.
pub async fn request_json(
    client: &Client,
    subject: &str,
    body: &Value,
    policy: &RetryPolicy,
    circuit: &Circuit,
    shutdown: &CancellationToken,
) -> Result<(Value, u32), RequestError> {
    let body = serde_json::to_vec(body).expect("JSON value");
    request(
        client,
        subject,
        &body,
        policy,
        circuit,
        shutdown,
        |bytes| match serde_json::from_slice::<Value>(bytes) {
            Ok(v) if v.get("error").is_some() => Err(format!("provider error: {}", v["error"])),
            Ok(v) => Ok(v),
            Err(e) => Err(format!("unreadable reply: {e}")),
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            ..Default::default()
        };
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(4), Duration::from_millis(800));
        assert_eq!(p.backoff(9), Duration::from_millis(1000));
    }

    #[test]
    fn circuit_opens_after_threshold_and_closes_on_success() {
        let c = Circuit::new(3, Duration::from_secs(60));
        c.failure();
        c.failure();
        assert!(!c.is_open());
        c.failure();
        assert!(c.is_open());
        c.success();
        assert!(!c.is_open());
    }
}
