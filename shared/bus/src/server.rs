//! A child `nats-server` with JetStream: the private server of `huiqi up` and the throwaway
//! server of every test. It listens on loopback (a random port unless told), keeps its store
//! under the given directory, allows 8 MB messages and, given [`NatsUsers`], requires every
//! client to log in as one of them with the permissions of [`crate::access`].
//!
//! Stopping it: dropping it (or [`NatsServer::stop`]) asks it to shut down cleanly (SIGTERM,
//! sent with `nats-server --signal`) and kills it if it has not gone within five seconds;
//! [`NatsServer::kill`] is the SIGKILL of fault drills, and [`NatsServer::restart`] brings it
//! back on the same port and store.

use crate::access::NatsUsers;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot start `{binary}` (is nats-server installed? apt-get install -y nats-server): {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("nats-server exited early; see {log}")]
    Exited { log: PathBuf },
    #[error("nats-server did not report its port within {0:?}")]
    NoPort(Duration),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// A running child nats-server.
pub struct NatsServer {
    child: Option<Child>,
    url: String,
    port: u16,
    dir: PathBuf,
    config: String,
    env: Vec<(String, String)>,
    /// Further command-line options (e.g. `--cluster` to move a node's route listener).
    args: Vec<String>,
}

fn binary() -> String {
    std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into())
}

impl NatsServer {
    /// Starts an open `nats-server -js` (no authentication) under `dir`; `port` None picks a
    /// free port. For tests of the open-bus case and for tools that need no login.
    pub fn start(dir: &Path, port: Option<u16>) -> Result<Self, ServerError> {
        Self::start_with(dir, port, None)
    }

    /// Starts the server; with `users`, only they may connect, each with its permissions.
    pub fn start_with(
        dir: &Path,
        port: Option<u16>,
        users: Option<&NatsUsers>,
    ) -> Result<Self, ServerError> {
        std::fs::create_dir_all(dir)?;
        Self::spawn_with(
            dir,
            port,
            Self::config_for(dir, users),
            Vec::new(),
            Vec::new(),
        )
    }

    /// The configuration of a private server under `dir` (store, payload limit, users).
    fn config_for(dir: &Path, users: Option<&NatsUsers>) -> String {
        // nats-server keeps its streams in `<store_dir>/jetstream`.
        let store = dir.to_path_buf();
        match users {
            None => format!(
                "max_payload: 8MB\njetstream {{\n  store_dir: {:?}\n}}\n",
                store.display().to_string()
            ),
            Some(users) => crate::access::server_config(
                "127.0.0.1:4222",
                &store.display().to_string(),
                "Private server of huiqi up (generated; the listen address is overridden).",
                &users.users(),
                users.partitions,
                |u| format!("{:?}", users.public_key(u).expect("every user has a key")),
            ),
        }
    }

    fn spawn_with(
        dir: &Path,
        port: Option<u16>,
        config: String,
        env: Vec<(String, String)>,
        args: Vec<String>,
    ) -> Result<Self, ServerError> {
        let mut server = NatsServer {
            child: None,
            url: String::new(),
            port: port.unwrap_or(0),
            dir: dir.to_path_buf(),
            config,
            env,
            args,
        };
        server.spawn()?;
        Ok(server)
    }

    /// Starts the server from a configuration file (e.g. the shipped `deploy/nats-server.conf`)
    /// with `env` in its environment (the variables the file refers to). The listen address and
    /// port are overridden to loopback and a free port, and the `store_dir` line of the copy
    /// written under `dir` points into `dir`.
    pub fn start_with_config_file(
        dir: &Path,
        config_file: &Path,
        env: Vec<(String, String)>,
    ) -> Result<Self, ServerError> {
        Self::start_with_config_file_and_args(dir, config_file, env, Vec::new(), None)
    }

    /// [`NatsServer::start_with_config_file`] with further command-line options and a given
    /// client port (None: a free one).
    pub fn start_with_config_file_and_args(
        dir: &Path,
        config_file: &Path,
        env: Vec<(String, String)>,
        args: Vec<String>,
        port: Option<u16>,
    ) -> Result<Self, ServerError> {
        std::fs::create_dir_all(dir)?;
        let store = format!("{:?}", dir.display().to_string());
        let config = std::fs::read_to_string(config_file)?
            .lines()
            .map(|l| match l.trim_start().strip_prefix("store_dir:") {
                Some(_) => format!("  store_dir: {store}"),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        Self::spawn_with(dir, port, config, env, args)
    }

    fn spawn(&mut self) -> Result<(), ServerError> {
        let conf = self.dir.join("nats-server.conf");
        let log = self.dir.join("nats-server.log");
        let ports_dir = self.dir.join("ports");
        std::fs::create_dir_all(&ports_dir)?;
        for old in std::fs::read_dir(&ports_dir)? {
            let _ = std::fs::remove_file(old?.path());
        }
        // 0600: a cluster node's configuration holds the route password.
        crate::trust::write_secret(&conf, &self.config)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let port = if self.port == 0 {
            "-1".to_string()
        } else {
            self.port.to_string()
        };
        let binary = binary();
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&conf)
            .args(["-a", "127.0.0.1", "-p", &port])
            .arg("-js")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(&self.args)
            .arg("-l")
            .arg(&log)
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| ServerError::Spawn { binary, source })?;
        self.child = Some(child);
        let url = self.wait_for_port(&ports_dir, &log)?;
        self.port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(self.port);
        self.url = url;
        Ok(())
    }

    fn wait_for_port(&mut self, ports_dir: &Path, log: &Path) -> Result<String, ServerError> {
        let limit = Duration::from_secs(20);
        let started = Instant::now();
        let child = self.child.as_mut().expect("spawned");
        let file = ports_dir.join(format!("nats-server_{}.ports", child.id()));
        loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    if let Some(url) = v["nats"][0].as_str().or(v["client"][0].as_str()) {
                        return Ok(url.to_string());
                    }
                }
            }
            if let Ok(Some(_)) = child.try_wait() {
                return Err(ServerError::Exited {
                    log: log.to_path_buf(),
                });
            }
            if started.elapsed() > limit {
                return Err(ServerError::NoPort(limit));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crashed machine would: no clean shutdown.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port with the same store.
    pub fn restart(&mut self) -> Result<(), ServerError> {
        self.stop();
        self.spawn()
    }

    /// Asks the server to shut down cleanly (SIGTERM) and waits up to five seconds before
    /// killing it.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = Command::new(binary())
            .arg("--signal")
            .arg(format!("term={}", c.id()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A cluster of private nats-servers on loopback (`huiqi up --cluster N`, and the cluster
/// tests): JetStream on every node, routes between all of them authenticated with a password
/// generated for this cluster, the same users and permissions as a single private server.
/// Node `i` (from 1) is `huiqi-<i>`, keeps its store under `dir/node-<i>` and listens for
/// clients on `first_port + i - 1` (free ports when `first_port` is None).
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

/// A port nothing listens on now (the kernel's choice; free again when this returns).
pub fn free_port() -> Result<u16, ServerError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl NatsCluster {
    pub fn start(
        dir: &Path,
        size: usize,
        first_port: Option<u16>,
        users: Option<&NatsUsers>,
    ) -> Result<Self, ServerError> {
        let client_ports = (0..size)
            .map(|i| match first_port {
                Some(p) => Ok(p + i as u16),
                None => free_port(),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let route_ports = (0..size)
            .map(|_| free_port())
            .collect::<Result<Vec<_>, _>>()?;
        // Never written outside the nodes' own (0600) configuration files.
        let password = crate::access::route_password();
        let routes: Vec<String> = route_ports
            .iter()
            .map(|p| {
                format!(
                    "nats-route://{}:{password}@127.0.0.1:{p}",
                    crate::access::ROUTE_USER
                )
            })
            .collect();
        let mut nodes = Vec::with_capacity(size);
        for i in 0..size {
            let node_dir = dir.join(format!("node-{}", i + 1));
            std::fs::create_dir_all(&node_dir)?;
            let mut config = NatsServer::config_for(&node_dir, users);
            config.push_str(&crate::access::cluster_block(&crate::access::ClusterNode {
                server_name: Self::node_name(i),
                listen: format!("127.0.0.1:{}", route_ports[i]),
                password: password.clone(),
                routes: routes
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, r)| r.clone())
                    .collect(),
            }));
            nodes.push(NatsServer::spawn_with(
                &node_dir,
                Some(client_ports[i]),
                config,
                Vec::new(),
                Vec::new(),
            )?);
        }
        Ok(NatsCluster { nodes })
    }

    /// The server name of node `index` (from 0): `huiqi-<index + 1>`.
    pub fn node_name(index: usize) -> String {
        format!("huiqi-{}", index + 1)
    }

    /// The peer id NATS derives from node `index`'s server name, as a leader lists a replica
    /// whose name it has not learned (`Server name unknown at this time (peerID: …)`):
    /// the first 8 bytes of the name's SHA-256, each mapped to one of 62 digits.
    pub fn peer_id(index: usize) -> String {
        use sha2::Digest;
        const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        sha2::Sha256::digest(Self::node_name(index).as_bytes())[..8]
            .iter()
            .map(|b| DIGITS[usize::from(*b) % DIGITS.len()] as char)
            .collect()
    }

    /// The index of the node named `name`.
    pub fn index_of(name: &str) -> Option<usize> {
        name.strip_prefix("huiqi-")?
            .parse::<usize>()
            .ok()?
            .checked_sub(1)
    }

    /// Every node's client URL, comma-separated (what `NATS_URL` takes).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.url().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn nodes(&self) -> &[NatsServer] {
        &self.nodes
    }

    pub fn node(&mut self, index: usize) -> &mut NatsServer {
        &mut self.nodes[index]
    }

    /// Stops every node (SIGTERM, then SIGKILL after five seconds).
    pub fn stop(&mut self) {
        for n in &mut self.nodes {
            n.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::NatsCluster;

    #[test]
    fn a_nodes_peer_id_is_the_one_nats_lists_for_it() {
        // As nats-server 2.9 listed node huiqi-1 to a leader that had not learned its name.
        assert_eq!(NatsCluster::peer_id(0), "isnMgF9k");
    }
}
