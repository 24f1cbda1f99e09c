//! A child `nats-server` with JetStream: the private server of `huiqi up` and the throwaway
//! server of every test. It listens on a random loopback port (learned from the ports file),
//! keeps its store under the given directory, allows 8 MB messages, and is killed on drop.

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
    child: Child,
    url: String,
    dir: PathBuf,
}

impl NatsServer {
    /// Starts `nats-server -js` with its store, config, log and ports file under `dir`.
    /// `port` None picks a free port.
    pub fn start(dir: &Path, port: Option<u16>) -> Result<Self, ServerError> {
        std::fs::create_dir_all(dir)?;
        let store = dir.join("jetstream");
        let conf = dir.join("nats-server.conf");
        let log = dir.join("nats-server.log");
        let ports_dir = dir.join("ports");
        std::fs::create_dir_all(&ports_dir)?;
        for old in std::fs::read_dir(&ports_dir)? {
            let _ = std::fs::remove_file(old?.path());
        }
        let port = port.map(i32::from).unwrap_or(-1);
        std::fs::write(
            &conf,
            format!(
                "listen: \"127.0.0.1:{port}\"\nmax_payload: 8MB\njetstream {{\n  store_dir: {store:?}\n}}\n"
            ),
        )?;
        let binary = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into());
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&conf)
            .arg("-js")
            .arg("-l")
            .arg(&log)
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| ServerError::Spawn { binary, source })?;
        let mut server = NatsServer {
            child,
            url: String::new(),
            dir: dir.to_path_buf(),
        };
        server.url = server.wait_for_port(&ports_dir, &log)?;
        Ok(server)
    }

    fn wait_for_port(&mut self, ports_dir: &Path, log: &Path) -> Result<String, ServerError> {
        let limit = Duration::from_secs(20);
        let started = Instant::now();
        let file = ports_dir.join(format!("nats-server_{}.ports", self.child.id()));
        loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    if let Some(url) = v["nats"][0].as_str().or(v["client"][0].as_str()) {
                        return Ok(url.to_string());
                    }
                }
            }
            if let Ok(Some(_)) = self.child.try_wait() {
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
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
