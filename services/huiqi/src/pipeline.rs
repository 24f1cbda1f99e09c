//! Everything in one process: the four services, the query responder and the provider
//! simulator, against a given NATS or a private child nats-server whose store lives under the
//! data dir.
//!
//! Secure by default: the private server requires every connection to log in as one of the
//! users of `huiqi_bus::access` (nkeys generated under `<keys>/nats/` on first start), each
//! service logs in as itself, and every service signs what it publishes with its own key from
//! `<keys>/signing/` and checks what it consumes against `<keys>/trust.json`.

use crate::HuiqiError;
use huiqi_bus::access::NatsUsers;
use huiqi_bus::service::ServiceConfig;
use huiqi_bus::setup::StreamSettings;
use huiqi_bus::trust::{KeySet, TrustStore};
use huiqi_bus::{NatsCluster, NatsOptions, NatsServer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct UpSettings {
    /// None: start a private nats-server (with authentication) under `data_dir/nats`.
    /// Some: connect every component to this server with these options (one login for all).
    pub nats: Option<NatsOptions>,
    /// The private server's port (None: a free one); with a cluster, the first node's (the
    /// others take the next ports).
    pub port: Option<u16>,
    /// Nodes of the private NATS: 1 (one server) or a cluster of 3 or 5 on loopback, the
    /// stream then at three replicas unless `stream.replicas` says otherwise.
    pub cluster: usize,
    pub data_dir: PathBuf,
    /// Signing keys, trust file and NATS user keys; None: `data_dir/keys`, generated when
    /// missing.
    pub keys_dir: Option<PathBuf>,
    /// None: do not run the provider simulator (real providers answer).
    pub fixtures_dir: Option<PathBuf>,
    pub provider_latency: Duration,
    pub provider_error_every: u64,
    pub provider_drop_every: u64,
    /// Per-attempt timeout for provider and treasury requests.
    pub request_timeout: Duration,
    pub stream: StreamSettings,
    /// Operator-loaded policy versions, besides the built-in ones.
    pub policy_dir: Option<PathBuf>,
    /// Named portals: each gets its own NATS user `portal-<name>` (on the private server) and
    /// its durable reply consumer `portal-<name>`.
    pub portals: Vec<String>,
    /// How often each service anchors its log head on the stream (and once at stop).
    pub anchor_every: Duration,
}

impl UpSettings {
    pub fn new(data_dir: &Path, fixtures_dir: Option<&Path>) -> Self {
        UpSettings {
            nats: None,
            port: None,
            cluster: 1,
            data_dir: data_dir.to_path_buf(),
            keys_dir: None,
            fixtures_dir: fixtures_dir.map(Path::to_path_buf),
            provider_latency: Duration::ZERO,
            provider_error_every: 0,
            provider_drop_every: 0,
            request_timeout: huiqi_bus::request::ATTEMPT_TIMEOUT,
            stream: StreamSettings::default(),
            policy_dir: None,
            portals: Vec::new(),
            anchor_every: Duration::from_secs(60),
        }
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.data_dir.join("treasury-ledger.jsonl")
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.keys_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys"))
    }
}

/// How each component logs in: per-user nkeys on the private server, or one set of options.
#[derive(Clone)]
enum Logins {
    Users(Arc<NatsUsers>, String),
    Shared(Box<NatsOptions>),
}

impl Logins {
    fn options(&self, user: &str) -> NatsOptions {
        match self {
            Logins::Users(users, url) => users.options(user, url),
            Logins::Shared(o) => (**o).clone(),
        }
    }
}

/// A running pipeline. Stop it with [`Pipeline::stop`]; dropping it stops a private server.
pub struct Pipeline {
    url: String,
    logins: Logins,
    keys: Arc<KeySet>,
    shutdown: CancellationToken,
    tasks: JoinSet<(&'static str, Result<(), String>)>,
    // Declared last: dropped after the tasks are gone.
    nats: Option<Private>,
}

/// The private NATS `huiqi up` started: one server or a cluster on loopback.
enum Private {
    Single(NatsServer),
    Cluster(NatsCluster),
}

impl Private {
    fn stop(&mut self) {
        match self {
            Private::Single(s) => s.stop(),
            Private::Cluster(c) => c.stop(),
        }
    }
}

impl Pipeline {
    pub async fn start(s: &UpSettings) -> Result<Pipeline, HuiqiError> {
        std::fs::create_dir_all(&s.data_dir)
            .map_err(|e| HuiqiError::Io(s.data_dir.display().to_string(), e))?;
        let keys_dir = s.keys_dir();
        let (keys, fresh) = KeySet::load_or_generate(&keys_dir)
            .map_err(|e| HuiqiError::Start("signing keys", e.to_string()))?;
        if fresh {
            tracing::info!(dir = %keys_dir.display(), "generated a signing key per service and the trust file");
        }
        let keys = Arc::new(keys);
        let trust = Arc::new(
            TrustStore::from_file(&KeySet::trust_path(&keys_dir))
                .map_err(|e| HuiqiError::Start("trust file", e.to_string()))?,
        );
        let (nats, url, logins) = match &s.nats {
            Some(o) => (None, o.display_url(), Logins::Shared(Box::new(o.clone()))),
            None => {
                let users = Arc::new(
                    NatsUsers::load_or_generate(&keys_dir, &s.portals)
                        .map_err(|e| HuiqiError::Start("NATS user keys", e.to_string()))?
                        .with_partitions(s.stream.partitions),
                );
                let dir = s.data_dir.join("nats");
                let server = if s.cluster > 1 {
                    NatsCluster::start(&dir, s.cluster, s.port, Some(&users)).map(Private::Cluster)
                } else {
                    NatsServer::start_with(&dir, s.port, Some(&users)).map(Private::Single)
                }
                .map_err(|e| HuiqiError::Start("nats-server", e.to_string()))?;
                let url = match &server {
                    Private::Single(one) => one.url().to_string(),
                    Private::Cluster(c) => c.url(),
                };
                (Some(server), url.clone(), Logins::Users(users, url))
            }
        };
        // Provision as the admin: the stream with its explicit settings and every consumer.
        let admin = logins
            .options("admin")
            .connect("huiqi-setup")
            .await
            .map_err(|e| HuiqiError::Start("nats", e.to_string()))?;
        let admin_js = async_nats::jetstream::new(admin);
        let mut stream = s.stream.clone();
        if s.cluster >= 3 && s.nats.is_none() && stream.replicas == 1 {
            stream.replicas = 3;
        }
        let provisioned = match huiqi_bus::setup::provision(&admin_js, &stream).await {
            Ok(()) => huiqi_bus::setup::provision_portals(&admin_js, &s.portals).await,
            Err(e) => Err(e),
        };
        if let Err(e) = provisioned {
            match &logins {
                // Our own server: the admin must be able to.
                Logins::Users(..) => return Err(HuiqiError::Start("setup", e.to_string())),
                Logins::Shared(_) => {
                    tracing::warn!(error = %e, "could not provision the stream and consumers with these credentials; services will bind to what an admin provisioned")
                }
            }
        }
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let retry = huiqi_bus::RetryPolicy {
            timeout: s.request_timeout,
            ..Default::default()
        };
        let config = |name: &str| -> Result<ServiceConfig, HuiqiError> {
            let key = keys
                .key(name)
                .ok_or_else(|| HuiqiError::Start("signing keys", format!("no key for {name}")))?;
            let mut nats = logins.options(name);
            if nats.inbox_prefix.is_none() {
                nats.inbox_prefix = Some(huiqi_bus::access::inbox_prefix(name));
            }
            let mut config = ServiceConfig::new(nats, s.data_dir.join(name), key, trust.clone());
            config.policy_dir = s.policy_dir.clone();
            config.anchor_every = s.anchor_every;
            // A worker that finds its directory lost rebuilds it from the stream (the
            // `recovery` login; this process holds every key anyway).
            let mut recovery = logins.options("recovery");
            if recovery.inbox_prefix.is_none() {
                recovery.inbox_prefix = Some(huiqi_bus::access::inbox_prefix("recovery"));
            }
            config.lease.recovery = Some(recovery);
            // Intake routes by the count; split services get a worker per partition below.
            config.partition = huiqi_events::Partition::new(0, s.stream.partitions)
                .map_err(|e| HuiqiError::Start("partitions", e))?;
            Ok(config)
        };
        // One worker per partition of a split service, each its own connection, consumer,
        // lease and log (`<data_dir>/<service>/p<i>`).
        let workers = |name: &str| -> Result<Vec<ServiceConfig>, HuiqiError> {
            let base = config(name)?;
            Ok(
                huiqi_bus::topology::partitions_of(name, s.stream.partitions)
                    .into_iter()
                    .map(|p| base.for_partition(name, p))
                    .collect(),
            )
        };

        if let Some(fixtures) = &s.fixtures_dir {
            let mut ps =
                huiqi_providers::Settings::new(logins.options("simulator"), fixtures.clone());
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
        let intake = huiqi_intake::build(huiqi_intake::Settings::new(config("intake")?))
            .await
            .map_err(|e| HuiqiError::Start("intake", e.to_string()))?;
        let mut logs = vec![intake.log()];
        let mut verifications = Vec::new();
        for c in workers("verification")? {
            let mut vs = huiqi_verification::Settings::new(c);
            vs.retry = retry.clone();
            let app = huiqi_verification::build(vs)
                .await
                .map_err(|e| HuiqiError::Start("verification", e.to_string()))?;
            logs.push(app.log());
            verifications.push(app);
        }
        let mut awards = Vec::new();
        for c in workers("award")? {
            let app = huiqi_award::build(huiqi_award::Settings::new(c))
                .await
                .map_err(|e| HuiqiError::Start("award", e.to_string()))?;
            logs.push(app.log());
            awards.push(app);
        }
        let mut payouts = Vec::new();
        for c in workers("payout")? {
            let mut pays = huiqi_payout::Settings::new(c);
            pays.retry = retry.clone();
            let app = huiqi_payout::build(pays)
                .await
                .map_err(|e| HuiqiError::Start("payout", e.to_string()))?;
            logs.push(app.log());
            payouts.push(app);
        }

        let query_client = logins
            .options("query")
            .connect("huiqi-query")
            .await
            .map_err(|e| HuiqiError::Start("query", e.to_string()))?;
        let sd = shutdown.clone();
        tasks.spawn(async move { ("query", crate::query::serve(query_client, logs, sd).await) });
        let sd = shutdown.clone();
        tasks.spawn(async move { ("intake", intake.run(sd).await.map_err(|e| e.to_string())) });
        for verification in verifications {
            let sd = shutdown.clone();
            tasks.spawn(async move {
                (
                    "verification",
                    verification.run(sd).await.map_err(|e| e.to_string()),
                )
            });
        }
        for award in awards {
            let sd = shutdown.clone();
            tasks.spawn(async move { ("award", award.run(sd).await.map_err(|e| e.to_string())) });
        }
        for payout in payouts {
            let sd = shutdown.clone();
            tasks.spawn(async move { ("payout", payout.run(sd).await.map_err(|e| e.to_string())) });
        }
        tracing::info!(nats = %url, data_dir = %s.data_dir.display(), "huiqi pipeline running");
        Ok(Pipeline {
            url,
            logins,
            keys,
            shutdown,
            tasks,
            nats,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// How `user` (a name of `huiqi_bus::access::USERS`) logs in to this pipeline's NATS.
    pub fn options(&self, user: &str) -> NatsOptions {
        self.logins.options(user)
    }

    /// The admin's login: for observers and drills that read everything.
    pub fn admin(&self) -> NatsOptions {
        self.options("admin")
    }

    /// The services' signing keys (tests sign with them to show what a compromise would do).
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// The private server, when the pipeline started one (for fault drills).
    pub fn server(&mut self) -> Option<&mut NatsServer> {
        match self.nats.as_mut()? {
            Private::Single(s) => Some(s),
            Private::Cluster(_) => None,
        }
    }

    /// The private cluster, when the pipeline started one (`--cluster N`).
    pub fn cluster(&mut self) -> Option<&mut NatsCluster> {
        match self.nats.as_mut()? {
            Private::Cluster(c) => Some(c),
            Private::Single(_) => None,
        }
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

    /// Asks every service to reach a safe state and stop; waits for them, then stops a
    /// private server.
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
        if let Some(mut server) = self.nats.take() {
            tokio::task::spawn_blocking(move || server.stop())
                .await
                .map_err(|e| HuiqiError::Service("nats-server", e.to_string()))?;
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
