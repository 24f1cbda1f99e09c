//! The flags every service binary takes (each also read from the environment), turned into a
//! [`ServiceConfig`]. Secure by default: a service does not start without its signing key and
//! a trust file.

use crate::connect::{NatsArgs, Secret};
use crate::service::ServiceConfig;
use crate::trust::{SigningKey, TrustStore};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Data directory; the service keeps its sled log in its own sub-directory.
    #[arg(long, env = "HUIQI_DATA_DIR", default_value = "huiqi-data")]
    pub data_dir: PathBuf,
    /// File holding this service's signing key seed (`huiqi keys generate` writes one).
    #[arg(long, env = "HUIQI_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
    /// The signing key seed itself (prefer the file; never logged).
    #[arg(long, env = "HUIQI_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<Secret>,
    /// The trust file: which public key may produce which event types.
    #[arg(long, env = "HUIQI_TRUST_FILE")]
    pub trust_file: Option<PathBuf>,
    /// Log records to skip at start when they cannot be read (recorded in the log as events).
    #[arg(
        long = "skip-record",
        env = "HUIQI_SKIP_RECORDS",
        value_delimiter = ','
    )]
    pub skip_records: Vec<u64>,
    /// A directory of operator-loaded policy versions (`*.json`), besides the built-in ones.
    #[arg(long, env = "HUIQI_POLICY_DIR")]
    pub policy_dir: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (`GET /metrics`), e.g. 0.0.0.0:9464.
    #[arg(long, env = "HUIQI_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Log format: `text` (default) or `json` (one object per line).
    #[arg(long, env = "HUIQI_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// How often to anchor the log head on the stream while it moves, seconds.
    #[arg(long, env = "HUIQI_ANCHOR_EVERY_SECS", default_value_t = 60)]
    pub anchor_every_secs: u64,
    /// How long to keep trying the first NATS connection, seconds.
    #[arg(long, env = "HUIQI_CONNECT_RETRY_SECS", default_value_t = 120)]
    pub connect_retry_secs: u64,
    /// This instance's id for the service's lease (one instance works, others stand by);
    /// default: host name and canonical data directory. Set it where the host name changes
    /// on every start (containers), or a restart looks like another instance taking over.
    #[arg(long, env = "HUIQI_INSTANCE")]
    pub instance: Option<String>,
    /// Seconds a holder's lease may lapse before a standby takes over.
    #[arg(long, env = "HUIQI_LEASE_TTL_SECS", default_value_t = 10)]
    pub lease_ttl_secs: u64,
    /// The nkey seed file of the NATS user `recovery`: lets a standby that takes over from
    /// another instance rebuild the log from the stream. Without it such a takeover stops
    /// with an error (a restart of the same instance never needs it).
    #[arg(long, env = "HUIQI_RECOVERY_NKEY_FILE")]
    pub recovery_nkey: Option<PathBuf>,
    /// How many partitions the deployment's claim work is split into (as given to
    /// `huiqi setup` and `huiqi nats-config`); intake routes claims by it.
    #[arg(long = "partitions", env = "HUIQI_PARTITIONS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=huiqi_events::partition::MAX_PARTITIONS as i64))]
    pub partitions: u16,
    /// Which partitions this process works on (e.g. `0,2`); default all of them. Each is a
    /// worker with its own consumer, lease and log directory (`<data-dir>/<service>/p<i>`).
    #[arg(long = "partition", env = "HUIQI_PARTITION_SET", value_delimiter = ',')]
    pub partition: Vec<u16>,
}

/// What is missing or wrong in a service's start-up configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Missing(String),
    #[error(transparent)]
    Trust(#[from] crate::trust::TrustError),
}

impl ServiceArgs {
    /// Installs logging (format and `RUST_LOG` filter, default `default_filter`) and, when
    /// `--metrics-addr` is given, the Prometheus endpoint. Call inside the runtime.
    pub fn init_telemetry(&self, default_filter: &str) -> Result<(), ConfigError> {
        crate::telemetry::init_with(default_filter, self.log_format == "json");
        if let Some(addr) = self.metrics_addr {
            crate::health::serve_metrics(addr).map_err(ConfigError::Missing)?;
            tracing::info!(%addr, "metrics at http://{addr}/metrics");
        }
        Ok(())
    }

    /// One configuration per partition of `service` this process works on (one for intake,
    /// which is never split, and for an unsplit deployment): see [`Self::config`].
    pub fn configs(&self, service: &str) -> Result<Vec<ServiceConfig>, ConfigError> {
        let base = self.config(service)?;
        if !crate::topology::is_partitioned(service) {
            // One worker, which keeps the count: intake routes each claim by it.
            return Ok(vec![base]);
        }
        if self.partition.is_empty() {
            return Ok(huiqi_events::Partition::all(self.partitions)
                .map(|p| base.for_partition(service, p))
                .collect());
        }
        let mut held = self.partition.clone();
        held.sort_unstable();
        held.dedup();
        held.into_iter()
            .map(|i| {
                huiqi_events::Partition::new(i, self.partitions)
                    .map(|p| base.for_partition(service, p))
                    .map_err(|e| ConfigError::Missing(format!("--partition {i}: {e}")))
            })
            .collect()
    }

    /// The configuration of `service`: its NATS login (replies under `_INBOX_<service>` unless
    /// told otherwise), its sled directory, its signing key and the trust file.
    pub fn config(&self, service: &str) -> Result<ServiceConfig, ConfigError> {
        let key = match (&self.signing_key, &self.signing_key_file) {
            (Some(seed), _) => SigningKey::from_seed(seed.expose(), "HUIQI_SIGNING_KEY")?,
            (None, Some(path)) => SigningKey::from_file(path)?,
            (None, None) => {
                return Err(ConfigError::Missing(format!(
                    "{service} needs its signing key: --signing-key-file or HUIQI_SIGNING_KEY_FILE \
                     (`huiqi keys generate --out DIR` writes DIR/signing/{service}.seed)"
                )))
            }
        };
        let trust = match &self.trust_file {
            Some(path) => TrustStore::from_file(path)?,
            None => {
                return Err(ConfigError::Missing(format!(
                    "{service} needs a trust file: --trust-file or HUIQI_TRUST_FILE \
                     (`huiqi keys generate --out DIR` writes DIR/trust.json)"
                )))
            }
        };
        let mut nats = self.nats.options();
        if nats.inbox_prefix.is_none() {
            nats.inbox_prefix = Some(crate::access::inbox_prefix(service));
        }
        nats.connect_retry = Duration::from_secs(self.connect_retry_secs);
        let mut config = ServiceConfig::new(
            nats,
            self.data_dir.join(service),
            Arc::new(key),
            Arc::new(trust),
        );
        config.skip_records = self.skip_records.clone();
        config.policy_dir = self.policy_dir.clone();
        config.anchor_every = Duration::from_secs(self.anchor_every_secs.max(1));
        config.lease.instance = self.instance.clone();
        config.lease.ttl = Duration::from_secs(self.lease_ttl_secs.max(1));
        // Intake's routing reads the count; split services get their index in `configs`.
        config.partition = huiqi_events::Partition::new(0, self.partitions)
            .map_err(|e| ConfigError::Missing(format!("--partitions: {e}")))?;
        config.lease.recovery = self.recovery_nkey.as_ref().map(|path| {
            let mut o = self.nats.options();
            o.creds_file = None;
            o.user = None;
            o.password = None;
            o.token = None;
            o.nkey_file = Some(path.clone());
            o.inbox_prefix = Some(crate::access::inbox_prefix("recovery"));
            o.connect_retry = Duration::from_secs(self.connect_retry_secs);
            o
        });
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        service: ServiceArgs,
    }

    fn args(extra: &[&str]) -> (tempfile::TempDir, ServiceArgs) {
        let dir = tempfile::tempdir().unwrap();
        let keys = crate::trust::KeySet::generate();
        keys.write(dir.path()).unwrap();
        let key = crate::trust::KeySet::seed_path(dir.path(), "intake");
        let trust = crate::trust::KeySet::trust_path(dir.path());
        let data = dir.path().join("data");
        let mut argv = vec![
            "x".to_string(),
            "--data-dir".into(),
            data.display().to_string(),
            "--signing-key-file".into(),
            key.display().to_string(),
            "--trust-file".into(),
            trust.display().to_string(),
        ];
        argv.extend(extra.iter().map(|a| a.to_string()));
        (dir, Args::parse_from(argv).service)
    }

    #[test]
    fn a_split_deployment_gives_a_worker_per_partition_and_intake_the_count() {
        let (dir, a) = args(&["--partitions", "3"]);
        let intake = a.configs("intake").unwrap();
        assert_eq!(intake.len(), 1);
        assert_eq!(intake[0].partition.count(), 3, "intake routes by the count");
        assert_eq!(intake[0].data_dir, dir.path().join("data/intake"));
        let award = a.configs("award").unwrap();
        let dirs: Vec<_> = award.iter().map(|c| c.data_dir.clone()).collect();
        assert_eq!(
            dirs,
            (0..3)
                .map(|i| dir.path().join(format!("data/award/p{i}")))
                .collect::<Vec<_>>()
        );
        let (_d, some) = args(&["--partitions", "3", "--partition", "2,0"]);
        let held: Vec<u16> = some
            .configs("payout")
            .unwrap()
            .iter()
            .map(|c| c.partition.index())
            .collect();
        assert_eq!(held, [0, 2]);
        let (_d, wrong) = args(&["--partitions", "2", "--partition", "2"]);
        let err = wrong.configs("award").unwrap_err().to_string();
        assert!(err.contains("--partition 2"), "{err}");
        // Unsplit: one worker in the service's own directory, as always.
        let (dir, one) = args(&[]);
        let c = one.configs("award").unwrap();
        assert_eq!(
            (c.len(), c[0].data_dir.clone()),
            (1, dir.path().join("data/award"))
        );
    }
}
