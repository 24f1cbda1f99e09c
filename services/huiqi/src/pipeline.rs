//! Everything in one process: the four services and the provider simulator, against a given
//! NATS or a private child nats-server whose store lives under the data dir.

use crate::HuiqiError;
use huiqi_bus::NatsServer;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct UpSettings {
    /// None: start a private nats-server under `data_dir/nats`.
    pub nats_url: Option<String>,
    pub data_dir: PathBuf,
    /// None: do not run the provider simulator (real providers answer).
    pub fixtures_dir: Option<PathBuf>,
    pub provider_latency: Duration,
    pub provider_error_every: u64,
    pub provider_drop_every: u64,
    /// Per-attempt timeout for provider and treasury requests.
    pub request_timeout: Duration,
}

impl UpSettings {
    pub fn new(data_dir: &Path, fixtures_dir: Option<&Path>) -> Self {
        UpSettings {
            nats_url: None,
            data_dir: data_dir.to_path_buf(),
            fixtures_dir: fixtures_dir.map(Path::to_path_buf),
            provider_latency: Duration::ZERO,
            provider_error_every: 0,
            provider_drop_every: 0,
            request_timeout: Duration::from_secs(5),
        }
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.data_dir.join("treasury-ledger.jsonl")
    }
}

/// A running pipeline. Stop it with [`Pipeline::stop`]; dropping it kills a private server.
pub struct Pipeline {
    url: String,
    shutdown: CancellationToken,
    tasks: JoinSet<(&'static str, Result<(), String>)>,
    // Declared last: dropped after the tasks are gone.
    _nats: Option<NatsServer>,
}

impl Pipeline {
    pub async fn start(s: &UpSettings) -> Result<Pipeline, HuiqiError> {
        std::fs::create_dir_all(&s.data_dir)
            .map_err(|e| HuiqiError::Io(s.data_dir.display().to_string(), e))?;
        let (nats, url) = match &s.nats_url {
            Some(u) => (None, u.clone()),
            None => {
                let server = NatsServer::start(&s.data_dir.join("nats"), None)
                    .map_err(|e| HuiqiError::Start("nats-server", e.to_string()))?;
                let url = server.url().to_string();
                (Some(server), url)
            }
        };
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let dir = |name: &str| s.data_dir.join(name);
        let retry = huiqi_bus::RetryPolicy {
            timeout: s.request_timeout,
            ..Default::default()
        };

        if let Some(fixtures) = &s.fixtures_dir {
            let mut ps = huiqi_providers::Settings::new(&url, fixtures.clone());
            ps.ledger_path = Some(s.ledger_path());
            ps.latency = s.provider_latency;
            ps.error_every = s.provider_error_every;
            ps.drop_every = s.provider_drop_every;
            let app = huiqi_providers::build(ps)
                .await
                .map_err(|e| HuiqiError::Start("providers", e.to_string()))?;
            let sd = shutdown.clone();
            tasks.spawn(async move { ("providers", app.run(sd).await.map_err(|e| e.to_string())) });
        }
        let intake = huiqi_intake::build(huiqi_intake::Settings::new(&url, dir("intake")))
            .await
            .map_err(|e| HuiqiError::Start("intake", e.to_string()))?;
        let mut vs = huiqi_verification::Settings::new(&url, dir("verification"));
        vs.retry = retry.clone();
        let verification = huiqi_verification::build(vs)
            .await
            .map_err(|e| HuiqiError::Start("verification", e.to_string()))?;
        let award = huiqi_award::build(huiqi_award::Settings::new(&url, dir("award")))
            .await
            .map_err(|e| HuiqiError::Start("award", e.to_string()))?;
        let mut pays = huiqi_payout::Settings::new(&url, dir("payout"));
        pays.retry = retry;
        let payout = huiqi_payout::build(pays)
            .await
            .map_err(|e| HuiqiError::Start("payout", e.to_string()))?;

        let logs = vec![intake.log(), verification.log(), award.log(), payout.log()];
        let query_client = huiqi_bus::connect(&url, "huiqi-query")
            .await
            .map_err(|e| HuiqiError::Start("query", e.to_string()))?;
        let sd = shutdown.clone();
        tasks.spawn(async move { ("query", crate::query::serve(query_client, logs, sd).await) });
        let sd = shutdown.clone();
        tasks.spawn(async move { ("intake", intake.run(sd).await.map_err(|e| e.to_string())) });
        let sd = shutdown.clone();
        tasks.spawn(async move {
            (
                "verification",
                verification.run(sd).await.map_err(|e| e.to_string()),
            )
        });
        let sd = shutdown.clone();
        tasks.spawn(async move { ("award", award.run(sd).await.map_err(|e| e.to_string())) });
        let sd = shutdown.clone();
        tasks.spawn(async move { ("payout", payout.run(sd).await.map_err(|e| e.to_string())) });
        tracing::info!(nats = %url, data_dir = %s.data_dir.display(), "huiqi pipeline running");
        Ok(Pipeline {
            url,
            shutdown,
            tasks,
            _nats: nats,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs until `stop` is cancelled or a service fails; then stops everything.
    pub async fn run_until(mut self, stop: CancellationToken) -> Result<(), HuiqiError> {
        let failed = tokio::select! {
            _ = stop.cancelled() => None,
            Some(r) = self.tasks.join_next() => Some(r),
        };
        let first = match failed {
            Some(Ok((name, Err(e)))) => Some(HuiqiError::Service(name, e)),
            Some(Ok((name, Ok(())))) => {
                Some(HuiqiError::Service(name, "stopped unexpectedly".into()))
            }
            Some(Err(e)) => Some(HuiqiError::Service("task", e.to_string())),
            None => None,
        };
        let rest = self.stop().await;
        match first {
            Some(e) => Err(e),
            None => rest,
        }
    }

    /// Asks every service to reach a safe state and stop; waits for them.
    pub async fn stop(mut self) -> Result<(), HuiqiError> {
        self.shutdown.cancel();
        let mut first = None;
        while let Some(r) = self.tasks.join_next().await {
            match r {
                Ok((_, Ok(()))) => {}
                Ok((name, Err(e))) => {
                    tracing::error!(service = name, error = %e, "service failed");
                    first.get_or_insert(HuiqiError::Service(name, e));
                }
                Err(e) => {
                    first.get_or_insert(HuiqiError::Service("task", e.to_string()));
                }
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
