//! The pipeline as separate processes: the built binaries (`huiqi-intake`, …,
//! `huiqi-providers`) against a real nats-server, started, SIGKILLed and restarted by id, and
//! judged from outside (the stream, the treasury ledger). Every process started here is
//! stopped by its id when the [`Deployment`] is dropped.
//!
//! The binaries come from the same target directory as the test (`cargo build --workspace
//! --bins`, which `scripts/test` runs before the tests).

use async_nats::jetstream;
use futures_util::StreamExt;
use huiqi::gen::Fixtures;
use huiqi_bus::access::NatsUsers;
use huiqi_bus::trust::KeySet;
use huiqi_bus::{NatsCluster, NatsOptions, NatsServer};
use huiqi_events::Envelope;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The services with a binary of their own, in start order.
pub const PROCESSES: &[&str] = &["providers", "intake", "verification", "award", "payout"];

/// Where the built binaries are: the target directory the test runs from.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`; scripts/test does)",
        path.display()
    );
    path
}

/// One stream message as read back from outside.
#[derive(Debug, Clone)]
pub struct Seen {
    pub subject: String,
    pub envelope: Envelope,
    pub signature: Option<String>,
    /// The exact bytes on the stream (what a signature covers).
    pub payload: bytes::Bytes,
}

/// The NATS a deployment runs on: one server, or a cluster on loopback.
pub enum Bus {
    Single(NatsServer),
    Cluster(NatsCluster),
}

impl Bus {
    /// What `NATS_URL` is set to: the server's URL, or every node's, comma-separated.
    pub fn url(&self) -> String {
        match self {
            Bus::Single(s) => s.url().to_string(),
            Bus::Cluster(c) => c.url(),
        }
    }

    /// The single server (panics on a cluster: a test that kills "the" server needs one).
    pub fn single(&mut self) -> &mut NatsServer {
        match self {
            Bus::Single(s) => s,
            Bus::Cluster(_) => panic!("this deployment runs on a cluster"),
        }
    }

    pub fn cluster(&mut self) -> &mut NatsCluster {
        match self {
            Bus::Cluster(c) => c,
            Bus::Single(_) => panic!("this deployment runs on one server"),
        }
    }
}

/// A deployment of separate processes on a private nats-server, with per-deployment keys.
/// The services' lease ttl in these runs: a standby takes over 4 s after the holder's last
/// renewal (10 s by default).
pub const LEASE_TTL_SECS: u64 = 4;

pub struct Deployment {
    pub dir: tempfile::TempDir,
    pub server: Bus,
    /// NATS user keys when the server requires logins (None: an open bus).
    pub users: Option<NatsUsers>,
    pub keys: KeySet,
    children: BTreeMap<&'static str, Child>,
    /// Extra environment per service (e.g. the simulator's latency).
    pub extra_env: BTreeMap<&'static str, Vec<(String, String)>>,
    /// How many times each service was started.
    pub starts: BTreeMap<&'static str, u32>,
    /// The deployment's partitions (huiqi_events::partition; 1 unsplit).
    pub partitions: u16,
}

impl Deployment {
    /// Writes the fixtures, generates the signing keys (and NATS user keys when `auth`),
    /// starts the server and provisions the stream and consumers as the admin.
    pub async fn new(fx: &Fixtures, auth: bool) -> Deployment {
        Self::on_nodes(fx, auth, 1).await
    }

    /// The same on a cluster of `nodes` nats-servers on loopback (the stream at R3 when
    /// there are three or more).
    pub async fn on_nodes(fx: &Fixtures, auth: bool, nodes: usize) -> Deployment {
        Self::split(fx, auth, nodes, 1).await
    }

    /// The same split into `partitions` (the server's permissions, the provisioned consumers
    /// and every service's `HUIQI_PARTITIONS`).
    pub async fn split(fx: &Fixtures, auth: bool, nodes: usize, partitions: u16) -> Deployment {
        let dir = tempfile::tempdir().expect("temp dir");
        fx.write(&dir.path().join("fixtures")).expect("fixtures");
        let keys_dir = dir.path().join("keys");
        let keys = KeySet::generate();
        keys.write(&keys_dir).expect("keys");
        let users = auth.then(|| {
            let u = NatsUsers::generate().with_partitions(partitions);
            u.write(&keys_dir).expect("user keys");
            u
        });
        let server = if nodes <= 1 {
            Bus::Single(
                NatsServer::start_with(&dir.path().join("nats"), None, users.as_ref())
                    .expect("nats-server"),
            )
        } else {
            Bus::Cluster(
                NatsCluster::start(&dir.path().join("nats"), nodes, None, users.as_ref())
                    .expect("nats cluster"),
            )
        };
        let d = Deployment {
            dir,
            server,
            users,
            keys,
            children: BTreeMap::new(),
            extra_env: BTreeMap::new(),
            starts: BTreeMap::new(),
            partitions,
        };
        let js = d.js("admin").await;
        let settings = huiqi_bus::setup::StreamSettings {
            replicas: nodes.clamp(1, 3),
            partitions,
            ..Default::default()
        };
        huiqi_bus::setup::provision(&js, &settings)
            .await
            .expect("provision");
        d
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.dir.path().join("keys")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn ledger(&self) -> PathBuf {
        self.dir.path().join("treasury-ledger.jsonl")
    }

    pub fn log_file(&self, service: &str) -> PathBuf {
        self.dir.path().join(format!("{service}.log"))
    }

    /// How `user` logs in (any options on an open bus).
    pub fn options(&self, user: &str) -> NatsOptions {
        match &self.users {
            Some(u) => u.options(user, &self.server.url()),
            None => NatsOptions::new(&self.server.url()),
        }
    }

    pub async fn js(&self, user: &str) -> jetstream::Context {
        let client = self
            .options(user)
            .connect(&format!("test-{user}"))
            .await
            .expect("connect");
        jetstream::new(client)
    }

    /// The environment a binary gets: its NATS login, keys, data dir and fixtures. A
    /// `<service>-standby` is a second instance of `<service>` with its own directory.
    fn env(&self, name: &str) -> Vec<(String, String)> {
        let (service, standby) = match name.strip_suffix("-standby") {
            Some(s) => (s, true),
            None => (name, false),
        };
        let keys = self.keys_dir();
        let p = |x: PathBuf| x.display().to_string();
        let mut env = vec![
            ("NATS_URL".to_string(), self.server.url()),
            ("RUST_LOG".into(), "info".into()),
            ("HUIQI_CONNECT_RETRY_SECS".into(), "60".into()),
        ];
        let user = if service == "providers" {
            "simulator"
        } else {
            service
        };
        if self.users.is_some() {
            env.push(("NATS_NKEY".into(), p(NatsUsers::seed_path(&keys, user))));
        }
        if service == "providers" {
            env.push(("HUIQI_FIXTURES".into(), p(self.dir.path().join("fixtures"))));
            env.push(("HUIQI_LEDGER".into(), p(self.ledger())));
        } else {
            let data = if standby {
                self.data_dir().join("standby")
            } else {
                self.data_dir()
            };
            env.push(("HUIQI_DATA_DIR".into(), p(data)));
            env.push((
                "HUIQI_INSTANCE".into(),
                format!("{service}-{}", if standby { 2 } else { 1 }),
            ));
            env.push(("HUIQI_LEASE_TTL_SECS".into(), LEASE_TTL_SECS.to_string()));
            env.push(("HUIQI_PARTITIONS".into(), self.partitions.to_string()));
            if self.users.is_some() {
                env.push((
                    "HUIQI_RECOVERY_NKEY_FILE".into(),
                    p(NatsUsers::seed_path(&keys, "recovery")),
                ));
            }
            env.push((
                "HUIQI_SIGNING_KEY_FILE".into(),
                p(KeySet::seed_path(&keys, service)),
            ));
            env.push(("HUIQI_TRUST_FILE".into(), p(KeySet::trust_path(&keys))));
        }
        env
    }

    /// Starts a second instance of `service` (its own directory, instance `<service>-2`); it
    /// stands by while the first holds the lease. Known as `<service>-standby`.
    pub fn start_standby(&mut self, service: &'static str) {
        let name = match service {
            "intake" => "intake-standby",
            "verification" => "verification-standby",
            "award" => "award-standby",
            "payout" => "payout-standby",
            other => panic!("{other} has no lease"),
        };
        self.start(name);
    }

    /// The instance holding `service`'s lease (`<service>-1` or `<service>-2`), read with the
    /// admin's login.
    pub async fn lease_holder(&self, service: &str) -> Option<String> {
        self.lease_holder_of(service, 0).await
    }

    /// The instance holding `service`'s lease on `partition`.
    pub async fn lease_holder_of(&self, service: &str, partition: u32) -> Option<String> {
        let js = self.js("admin").await;
        let kv = js.get_key_value(huiqi_bus::lease::BUCKET).await.ok()?;
        let entry = huiqi_bus::lease::read(&kv, &huiqi_bus::lease::key(service, partition))
            .await
            .ok()??;
        let v: huiqi_bus::lease::LeaseValue = serde_json::from_slice(&entry.value).ok()?;
        (v.state == "held").then_some(v.holder)
    }

    /// The services that split into partitions (the rest, intake, is one partition always).
    pub fn split_services() -> Vec<&'static str> {
        huiqi::commands::SERVICES
            .iter()
            .copied()
            .filter(|s| huiqi_bus::topology::is_partitioned(s))
            .collect()
    }

    /// The first instance of every split service works only the partitions in `set` (its
    /// `HUIQI_PARTITION_SET`); the standbys started later work the rest.
    pub fn first_instances_work(&mut self, set: &str) {
        for s in Self::split_services() {
            self.extra_env
                .insert(s, vec![("HUIQI_PARTITION_SET".into(), set.into())]);
        }
    }

    /// Whether each of `services` has partition `partition`'s lease held by its instance
    /// `instance` (`<service>-<instance>`).
    pub async fn held_by(&self, services: &[&str], partition: u32, instance: u32) -> bool {
        for s in services {
            let want = format!("{s}-{instance}");
            if self.lease_holder_of(s, partition).await.as_deref() != Some(want.as_str()) {
                return false;
            }
        }
        true
    }

    /// Starts (or restarts) one service's binary; its output goes to `<service>.log`.
    pub fn start(&mut self, service: &'static str) {
        assert!(
            !self.children.contains_key(service),
            "{service} already runs"
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file(service))
            .expect("log file");
        let program = service.strip_suffix("-standby").unwrap_or(service);
        let child = Command::new(binary(&format!("huiqi-{program}")))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env(service))
            .envs(self.extra_env.get(service).cloned().unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start huiqi-{service}: {e}"));
        self.children.insert(service, child);
        *self.starts.entry(service).or_default() += 1;
    }

    pub fn start_all(&mut self) {
        for s in PROCESSES {
            self.start(s);
        }
    }

    /// SIGKILL by id, and wait for it.
    pub fn kill(&mut self, service: &str) {
        if let Some(mut c) = self.children.remove(service) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM by id (a clean stop), waiting up to `limit` before SIGKILL; whether it exited
    /// by itself, and its exit status.
    pub fn terminate(
        &mut self,
        service: &str,
        limit: Duration,
    ) -> Option<std::process::ExitStatus> {
        let mut c = self.children.remove(service)?;
        let _ = Command::new("kill")
            .args(["-s", "TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to a process by its id.
    pub fn signal(&mut self, name: &str, signal: &str) {
        if let Some(c) = self.children.get(name) {
            let _ = Command::new("kill")
                .args(["-s", signal, &c.id().to_string()])
                .status();
        }
    }

    /// Forgets a process that exited by itself (reaping it), so it can be started again.
    pub fn reap(&mut self, name: &str) -> Option<std::process::ExitStatus> {
        let mut c = self.children.remove(name)?;
        match c.try_wait() {
            Ok(Some(status)) => Some(status),
            _ => {
                let _ = c.kill();
                let _ = c.wait();
                None
            }
        }
    }

    /// Whether the service's process is still alive (it may have exited on an error).
    pub fn running(&mut self, service: &str) -> bool {
        match self.children.get_mut(service) {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn stop_all(&mut self) {
        let names: Vec<&'static str> = self.children.keys().copied().collect();
        for s in names {
            self.kill(s);
        }
    }

    /// Every message on the stream whose subject matches `filter`, read from the start with
    /// the admin's login.
    ///
    /// The reader is a one-replica consumer that NATS may place on any node holding the
    /// stream; on a cluster node still catching up after a restart it sees less than the
    /// leader holds. So the read is repeated (at most 10 times, 2 s apart) until it has as many
    /// messages as the stream leader counts for `filter`; the last read is returned either way
    /// and judged as it is.
    pub async fn stream(&self, filter: &str) -> Vec<Seen> {
        let js = self.js("admin").await;
        let mut read = Vec::new();
        for attempt in 1..=10 {
            let counted = self.count(filter).await;
            read = crate::read_stream(&js, filter).await;
            if read.len() >= counted {
                break;
            }
            eprintln!(
                "read {} of the {counted} messages on {filter} the leader counts (try {attempt})",
                read.len()
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        read.into_iter()
            .map(|m| Seen {
                subject: m.subject.to_string(),
                signature: m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(huiqi_bus::trust::SIGNATURE_HEADER))
                    .map(|v| v.as_str().to_string()),
                envelope: Envelope::decode(&m.payload).expect("event"),
                payload: m.payload.clone(),
            })
            .collect()
    }

    /// Polls `check` every half second until it holds or `limit` passes.
    pub async fn wait_until<F, Fut>(&self, limit: Duration, mut check: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + limit;
        loop {
            if check().await {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Runs the `huiqi` CLI with the admin's login; returns (success, stdout, stderr).
    pub fn huiqi(&self, args: &[&str]) -> (bool, String, String) {
        let mut cmd = Command::new(binary("huiqi"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("NATS_URL", self.server.url())
            .env("RUST_LOG", "warn");
        if self.users.is_some() {
            cmd.env("NATS_NKEY", NatsUsers::seed_path(&self.keys_dir(), "admin"));
        }
        let out = cmd.output().expect("run huiqi");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.stop_all();
        // A failing test's process logs, kept for a look when HUIQI_KEEP_LOGS names a
        // directory (the temp directory goes with the deployment).
        if let (true, Some(keep)) = (
            std::thread::panicking(),
            std::env::var_os("HUIQI_KEEP_LOGS"),
        ) {
            let to = PathBuf::from(keep).join(format!(
                "{}-{}",
                std::process::id(),
                self.dir
                    .path()
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("run")
            ));
            if std::fs::create_dir_all(&to).is_ok() {
                for e in std::fs::read_dir(self.dir.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    if e.path().extension().is_some_and(|x| x == "log") {
                        let _ = std::fs::copy(e.path(), to.join(e.file_name()));
                    }
                }
                eprintln!("process logs kept in {}", to.display());
            }
        }
    }
}

/// Publishes events as a portal does, with `Nats-Msg-Id` = event id (many acks in flight).
pub async fn submit(js: &jetstream::Context, events: &[Envelope]) {
    huiqi::watch::publish_all(js, events, 256)
        .await
        .expect("publish applications");
}

/// Publishes raw bytes on `subject` with optional headers, waiting for the stream's ack.
pub async fn publish_raw(
    js: &jetstream::Context,
    subject: &str,
    msg_id: &str,
    signature: Option<&str>,
    payload: Vec<u8>,
) {
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", msg_id);
    if let Some(s) = signature {
        h.insert(huiqi_bus::trust::SIGNATURE_HEADER, s);
    }
    js.publish_with_headers(subject.to_string(), h, payload.into())
        .await
        .expect("publish")
        .await
        .expect("ack");
}

impl Deployment {
    /// How many messages the stream holds per subject matching `filter` (cheap: no payloads).
    /// An unreachable server counts as nothing yet.
    pub async fn subject_counts(&self, filter: &str) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        let Ok(client) = self.options("admin").connect("test-count").await else {
            return out;
        };
        let js = jetstream::new(client);
        let Ok(stream) = js.get_stream(huiqi_bus::setup::STREAM).await else {
            return out;
        };
        let Ok(mut subjects) = stream.info_with_subjects(filter).await else {
            return out;
        };
        while let Some(Ok((subject, n))) = subjects.next().await {
            out.insert(subject, n);
        }
        out
    }

    /// The total of [`Deployment::subject_counts`].
    pub async fn count(&self, filter: &str) -> usize {
        self.subject_counts(filter).await.values().sum()
    }
}
