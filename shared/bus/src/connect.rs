//! How every Huiqi binary logs in to NATS: URL, credentials (a `.creds` file, an nkey seed,
//! user and password, or a token) and TLS, from flags or the environment.
//!
//! Why it is careful: async-nats does not take `user:pass@` from a URL, and its connection
//! errors repeat the URL. So credentials in a URL are moved into the options and the URL is
//! shown without them; secrets live in [`Secret`], whose `Debug` and `Display` print stars.

use crate::BusError;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A secret string: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// Everything needed to open a NATS connection. Its `Debug` shows the URL without credentials
/// and no secret.
#[derive(Clone)]
pub struct NatsOptions {
    pub url: String,
    /// A NATS `.creds` file (JWT and nkey seed).
    pub creds_file: Option<PathBuf>,
    /// A file holding an nkey user seed (`SU…`).
    pub nkey_file: Option<PathBuf>,
    /// An nkey user seed given directly (in-process use: `huiqi up` and tests).
    pub nkey_seed: Option<Secret>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
    /// CA certificate(s) to trust for the server (PEM).
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Refuse a connection that is not TLS.
    pub tls_required: bool,
    /// Prefix of this client's reply subjects; least-privilege users may subscribe only to
    /// their own (`_INBOX_<user>.>` in the shipped server configuration).
    pub inbox_prefix: Option<String>,
    /// How long to keep trying the first connection (services start before or during a NATS
    /// restart); zero tries once.
    pub connect_retry: Duration,
}

impl std::fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsOptions")
            .field("url", &self.display_url())
            .field("creds_file", &self.creds_file)
            .field("nkey_file", &self.nkey_file)
            .field("nkey_seed", &self.nkey_seed)
            .field("user", &self.user)
            .field("password", &self.password)
            .field("token", &self.token)
            .field("tls_required", &self.tls_required)
            .field("inbox_prefix", &self.inbox_prefix)
            .finish_non_exhaustive()
    }
}

impl NatsOptions {
    /// Anonymous, plain connection to `url`, one attempt.
    pub fn new(url: &str) -> Self {
        NatsOptions {
            url: url.to_string(),
            creds_file: None,
            nkey_file: None,
            nkey_seed: None,
            user: None,
            password: None,
            token: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_required: false,
            inbox_prefix: None,
            connect_retry: Duration::ZERO,
        }
    }

    /// Logs in with an nkey user seed.
    pub fn with_nkey(mut self, seed: &str) -> Self {
        self.nkey_seed = Some(Secret::new(seed));
        self
    }

    pub fn with_inbox_prefix(mut self, prefix: &str) -> Self {
        self.inbox_prefix = Some(prefix.to_string());
        self
    }

    /// The URL with any credentials replaced by `***`, for messages.
    pub fn display_url(&self) -> String {
        split_userinfo(&self.url).0
    }

    async fn options(&self, name: &str) -> Result<async_nats::ConnectOptions, String> {
        let (_, from_url, _) = split_userinfo(&self.url);
        let mut o = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5));
        if let Some(path) = &self.creds_file {
            o = o
                .credentials_file(path)
                .await
                .map_err(|e| format!("credentials file {}: {}", path.display(), e.kind()))?;
        }
        let seed = match (&self.nkey_seed, &self.nkey_file) {
            (Some(s), _) => Some(s.expose().trim().to_string()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("nkey file {}: {e}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        if let Some(seed) = seed {
            nkeys::KeyPair::from_seed(&seed)
                .map_err(|e| format!("nkey seed is not valid ({})", e.kind()))?;
            o = o.nkey(seed);
        }
        match (&self.user, &self.password, from_url) {
            (Some(u), p, _) => {
                o = o.user_and_password(
                    u.clone(),
                    p.as_ref()
                        .map(|p| p.expose().to_string())
                        .unwrap_or_default(),
                )
            }
            (None, _, Some(Userinfo::UserPassword(u, p))) => o = o.user_and_password(u, p),
            (None, _, Some(Userinfo::Token(t))) => o = o.token(t),
            (None, _, None) => {}
        }
        if let Some(t) = &self.token {
            o = o.token(t.expose().to_string());
        }
        if let Some(ca) = &self.tls_ca {
            o = o.add_root_certificates(ca.clone());
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => o = o.add_client_certificate(c.clone(), k.clone()),
            (None, None) => {}
            _ => return Err("TLS client certificate and key must be given together".into()),
        }
        if self.tls_required {
            o = o.require_tls(true);
        }
        if let Some(p) = &self.inbox_prefix {
            o = o.custom_inbox_prefix(p);
        }
        Ok(o)
    }

    /// Connects, naming the connection (visible in server monitoring), retrying the first
    /// connection for up to [`NatsOptions::connect_retry`].
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client, BusError> {
        let url = self.display_url();
        let err = |message: String| BusError::Connect {
            url: url.clone(),
            message,
        };
        let started = Instant::now();
        let mut backoff = Duration::from_millis(200);
        loop {
            let options = self.options(name).await.map_err(&err)?;
            // A cluster is a comma-separated list of URLs; the client fails over between them
            // (and to the servers the cluster announces).
            let target = split_userinfo(&self.url).2;
            let servers: Vec<&str> = target.split(',').map(str::trim).collect();
            match options.connect(servers).await {
                Ok(c) => return Ok(c),
                Err(e) => {
                    // async-nats errors can repeat the address; it carries no credentials
                    // because they were moved out of it above.
                    let message = e.to_string();
                    if started.elapsed() + backoff > self.connect_retry {
                        return Err(err(message));
                    }
                    tracing::warn!(%url, error = %message, "NATS not reachable yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

enum Userinfo {
    UserPassword(String, String),
    Token(String),
}

/// Splits `nats://user:pass@host:4222` into (the URL for display, the credentials, the URL
/// to dial without them). Comma-separated server lists are handled entry by entry.
fn split_userinfo(url: &str) -> (String, Option<Userinfo>, String) {
    let mut shown = Vec::new();
    let mut dial = Vec::new();
    let mut creds = None;
    for part in url.split(',') {
        let part = part.trim();
        let (scheme, rest) = match part.split_once("://") {
            Some((s, r)) => (format!("{s}://"), r),
            None => (String::new(), part),
        };
        let host_end = rest.find('/').unwrap_or(rest.len());
        match rest[..host_end].rfind('@') {
            Some(at) => {
                let info = &rest[..at];
                let host = &rest[at + 1..];
                shown.push(format!("{scheme}***@{host}"));
                dial.push(format!("{scheme}{host}"));
                if creds.is_none() {
                    creds = Some(match info.split_once(':') {
                        Some((u, p)) => Userinfo::UserPassword(u.to_string(), p.to_string()),
                        None => Userinfo::Token(info.to_string()),
                    });
                }
            }
            None => {
                shown.push(part.to_string());
                dial.push(part.to_string());
            }
        }
    }
    (shown.join(","), creds, dial.join(","))
}

/// The NATS flags every binary takes; each has an environment variable, and secrets are
/// hidden from `--help`.
#[derive(Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated.
    #[arg(
        long = "nats-url",
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub url: String,
    /// A NATS credentials (.creds) file.
    #[arg(long = "nats-creds", env = "NATS_CREDS")]
    pub creds: Option<PathBuf>,
    /// A file holding an nkey user seed.
    #[arg(long = "nats-nkey", env = "NATS_NKEY")]
    pub nkey: Option<PathBuf>,
    #[arg(long = "nats-user", env = "NATS_USER")]
    pub user: Option<String>,
    #[arg(long = "nats-password", env = "NATS_PASSWORD", hide_env_values = true)]
    pub password: Option<Secret>,
    #[arg(long = "nats-token", env = "NATS_TOKEN", hide_env_values = true)]
    pub token: Option<Secret>,
    /// CA certificate (PEM) that signed the server's certificate.
    #[arg(long = "nats-tls-ca", env = "NATS_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long = "nats-tls-cert", env = "NATS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[arg(long = "nats-tls-key", env = "NATS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Refuse to talk to NATS without TLS.
    #[arg(long = "nats-tls-required", env = "NATS_TLS_REQUIRED")]
    pub tls_required: bool,
    /// Prefix of reply subjects (the shipped server configuration lets user U subscribe only
    /// to `_INBOX_U.>`).
    #[arg(long = "nats-inbox-prefix", env = "NATS_INBOX_PREFIX")]
    pub inbox_prefix: Option<String>,
}

impl std::fmt::Debug for NatsArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.options().fmt(f)
    }
}

impl NatsArgs {
    pub fn options(&self) -> NatsOptions {
        NatsOptions {
            url: self.url.clone(),
            creds_file: self.creds.clone(),
            nkey_file: self.nkey.clone(),
            nkey_seed: None,
            user: self.user.clone(),
            password: self.password.clone(),
            token: self.token.clone(),
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_required: self.tls_required,
            inbox_prefix: self.inbox_prefix.clone(),
            connect_retry: Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_a_url_are_moved_out_and_never_shown() {
        let (shown, creds, dial) = split_userinfo("nats://intake:s3cret@nats:4222");
        assert_eq!(shown, "nats://***@nats:4222");
        assert_eq!(dial, "nats://nats:4222");
        assert!(
            matches!(creds, Some(Userinfo::UserPassword(u, p)) if u == "intake" && p == "s3cret")
        );
        let (shown, creds, _) = split_userinfo("tls://tok@a:1, nats://b:2");
        assert_eq!(shown, "tls://***@a:1,nats://b:2");
        assert!(matches!(creds, Some(Userinfo::Token(t)) if t == "tok"));
        let o = NatsOptions {
            password: Some(Secret::new("hunter2")),
            ..NatsOptions::new("nats://u:hunter2@h:1")
        };
        let debug = format!("{o:?} {}", o.display_url());
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[tokio::test]
    async fn a_refused_login_does_not_echo_the_password() {
        // Nothing listens on port 1: the error must still not carry the secret.
        let o = NatsOptions::new("nats://svc:topsecret@127.0.0.1:1");
        let e = o.connect("t").await.unwrap_err().to_string();
        assert!(!e.contains("topsecret"), "{e}");
        assert!(e.contains("***@127.0.0.1:1"), "{e}");
    }
}
