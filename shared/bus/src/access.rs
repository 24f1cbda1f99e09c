//! Who may do what on the bus: one NATS user per service and per role, each allowed only what
//! its job needs, written once here and rendered into both the private server configuration
//! of `huiqi up` and the shipped `deploy/nats-server.conf` (a test keeps the shipped file equal
//! to the rendering, and another asserts the allowed/denied table against a real server).
//!
//! The rules:
//! - a service publishes only its own event subjects (and its provider requests), uses only its
//!   own durable consumer (info, next, acks) and reads the stream's info; it can create, purge or
//!   delete nothing;
//! - the portal publishes applications and reads intake's replies;
//! - bureau systems read the public subjects: core subscriptions, and the `bureau-*` durable
//!   consumers an admin provisions, which they may pull from and ack;
//! - the operator role monitors (stream and consumer info, `huiqi.query.claim`); reading event
//!   contents (parked messages, restore) needs the admin;
//! - the simulator (check providers and treasury) answers requests;
//! - only the admin may create, update, purge or delete streams and consumers.
//!
//! Each user's replies arrive under `_INBOX_<user>.` and only that user may subscribe there,
//! so nobody reads another's provider replies, treasury answers or publish acks.

use crate::setup::STREAM;
use crate::topology;
use huiqi_events::subjects as s;
use std::path::{Path, PathBuf};

/// Every NATS user of a deployment, in the order the configuration lists them.
pub const USERS: &[&str] = &[
    "admin",
    "operator",
    "portal",
    "bureau",
    "simulator",
    "query",
    "intake",
    "verification",
    "award",
    "payout",
    "recovery",
];

/// The NATS user of portal `name` (see `huiqi_events::subjects::valid_portal`).
pub fn portal_user(name: &str) -> String {
    format!("portal-{name}")
}

/// The users of a deployment with these portals: [`USERS`] and one `portal-<name>` each.
pub fn users_with(portals: &[String]) -> Vec<String> {
    USERS
        .iter()
        .map(|u| u.to_string())
        .chain(portals.iter().map(|p| portal_user(p)))
        .collect()
}

/// A user's permissions: subjects it may publish to and subscribe to, and whether it may
/// answer requests (publish to the reply subject of a request it received), and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    pub allow_responses: Option<Responses>,
}

/// How a user may answer the requests it receives: once each, within `expires` of receiving it
/// (nats-server's `allow_responses: { max, expires }`).
///
/// Why the window is short and never nats-server's default (`allow_responses: true`, two
/// minutes): the server remembers the reply subject of **every** message it delivers to such a
/// user, JetStream deliveries included (their reply is the ack subject), until the window ends;
/// past 4,096 remembered subjects it walks all of them on every delivery to that connection.
/// A service's consumer receives about one delivery per claim, so with two minutes a service at
/// 250 claims/s held ~13,000 subjects after 53 s and nats-server's CPU went to that walk
/// (70% of its profile), stalling the pipeline (README, "Performance"). With a window of
/// [`SERVICE_ANSWER_WINDOW`] the set stays under 4,096 up to ~1,300 deliveries a second per
/// connection; past that, partitions spread a service over several connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Responses {
    /// Answers per request.
    pub max: u32,
    pub expires: std::time::Duration,
}

/// How long a service may take to answer a health or `$SRV` request: longer than the 2 s
/// `huiqi status` waits, short enough to keep nats-server's reply set small (see [`Responses`]).
pub const SERVICE_ANSWER_WINDOW: std::time::Duration = std::time::Duration::from_secs(3);
/// How long the simulator may take to answer a check or treasury request: as long as a caller
/// waits per attempt ([`crate::request::ATTEMPT_TIMEOUT`]); a later answer reaches nobody.
pub const PROVIDER_ANSWER_WINDOW: std::time::Duration = crate::request::ATTEMPT_TIMEOUT;
/// How long the query responder may take: as long as `huiqi query` waits per attempt (the
/// same [`crate::request::ATTEMPT_TIMEOUT`]).
pub const QUERY_ANSWER_WINDOW: std::time::Duration = crate::request::ATTEMPT_TIMEOUT;

fn answers_within(expires: std::time::Duration) -> Option<Responses> {
    Some(Responses { max: 1, expires })
}

/// The reply prefix of a user.
pub fn inbox_prefix(user: &str) -> String {
    format!("_INBOX_{user}")
}

fn consumer_api(durable: &str) -> Vec<String> {
    vec![
        format!("$JS.API.CONSUMER.INFO.{STREAM}.{durable}"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{durable}"),
        format!("$JS.ACK.{STREAM}.{durable}.>"),
    ]
}

fn service_publish(service: &str, partitions: u16) -> Vec<String> {
    let own: &[&str] = match service {
        "intake" => &[
            s::INTAKE_ACCEPTED,
            s::INTAKE_REJECTED,
            "huiqi.intake.accepted.*",
            "huiqi.intake.rejected.*",
            s::CLAIM_OPENED,
        ],
        "verification" => &[s::FACTS_RECORDED, s::CLAIM_VERIFIED, "huiqi.checks.*"],
        "award" => &[
            "huiqi.awards.approved.*",
            "huiqi.awards.rejected.*",
            "huiqi.awards.supplemented.*",
            s::ENTITLEMENT_DATA_PACKAGE,
            s::ENTITLEMENT_RESIDENT_POINTS,
            s::PAYMENT_ORDERED,
            s::COUNTED_ELSEWHERE,
        ],
        "payout" => &[s::PAYOUTS_SETTLED, s::PAYOUTS_FAILED, s::TREASURY_PAY],
        _ => &[],
    };
    let split = partitions > 1;
    let mut out: Vec<String> = Vec::new();
    for x in own {
        out.push(x.to_string());
        // Split, internal subjects carry the partition as a last token (huiqi_events::partition).
        if split && x.starts_with("huiqi.internal.") {
            out.push(format!("{x}.*"));
        }
    }
    out.push(s::parked_subject(service));
    out.push(s::heads_subject(service));
    if split && topology::is_partitioned(service) {
        out.push(format!("{}.*", s::heads_subject(service)));
    }
    out.push(format!("$JS.API.STREAM.INFO.{STREAM}"));
    // NATS matches whole tokens, so `award-p*` cannot be one pattern: each consumer is named.
    for durable in topology::service_durables(service, partitions) {
        out.extend(consumer_api(&durable));
    }
    out.extend(lease_api(service));
    // Split, award takes the counts that cross partitions (crate::reserve).
    if split && service == "award" {
        let stream = crate::reserve::bucket_stream();
        out.push(format!("$JS.API.STREAM.INFO.{stream}"));
        out.push(format!("$JS.API.STREAM.MSG.GET.{stream}"));
        out.push(format!("$KV.{}.>", crate::reserve::BUCKET));
    }
    out
}

/// The stream subjects `service` may publish its events on (its own, portal-scoped replies,
/// parked records, anchored heads): where a restore looks for what it published.
/// Split or not: a deployment's intake may route to partitions.
pub fn event_subjects(service: &str) -> Vec<String> {
    service_publish(service, 2)
        .into_iter()
        .filter(|x| !x.starts_with('$'))
        .collect()
}

/// A service's own lease (crate::lease): read and write its keys, nobody else's.
fn lease_api(service: &str) -> Vec<String> {
    let bucket = crate::lease::BUCKET;
    vec![
        format!("$JS.API.STREAM.INFO.{}", crate::lease::bucket_stream()),
        // Reads go to the bucket's leader (lease::read); the request names no key, so a
        // service can read who holds the other services' leases too (never write them).
        format!("$JS.API.STREAM.MSG.GET.{}", crate::lease::bucket_stream()),
        format!("$KV.{bucket}.{service}.>"),
    ]
}

/// What a standby taking over needs to rebuild a service's log (crate::service): read the
/// whole stream through its own ordered readers and rewind the four services' consumers. It
/// publishes no event, acknowledges nothing and touches no stream.
fn recovery_publish(partitions: u16) -> Vec<String> {
    let mut out = vec![
        format!("$JS.API.STREAM.INFO.{STREAM}"),
        format!("$JS.API.CONSUMER.CREATE.{STREAM}"),
        format!("$JS.API.CONSUMER.CREATE.{STREAM}.*"),
        format!("$JS.API.CONSUMER.CREATE.{STREAM}.*.>"),
        format!("$JS.API.CONSUMER.INFO.{STREAM}.*"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{STREAM}.*"),
    ];
    for (service, _) in topology::SERVICE_CONSUMERS {
        for durable in topology::service_durables(service, partitions) {
            out.push(format!("$JS.API.CONSUMER.DELETE.{STREAM}.{durable}"));
        }
    }
    out
}

/// The permissions of `user` (None for an unknown user) in a deployment of `partitions`
/// (huiqi_events::partition; 1 = unsplit).
pub fn permissions(user: &str, partitions: u16) -> Option<Permissions> {
    let inbox = format!("{}.>", inbox_prefix(user));
    let p = |publish: Vec<String>, mut subscribe: Vec<String>, allow_responses| {
        subscribe.push(inbox.clone());
        Some(Permissions {
            publish,
            subscribe,
            allow_responses,
        })
    };
    let strs = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    match user {
        "admin" => Some(Permissions {
            publish: vec![">".into()],
            subscribe: vec![">".into()],
            allow_responses: None,
        }),
        // Each service also answers its health subject and the NATS micro-service
        // endpoints ($SRV.PING/INFO/STATS, as `huiqi-<service>`).
        "intake" | "verification" | "award" | "payout" => p(
            service_publish(user, partitions),
            {
                let mut sub = vec![crate::health::health_subject(user)];
                // Split, each partition's worker answers `huiqi.health.<service>.<index>`.
                if partitions > 1 && topology::is_partitioned(user) {
                    sub.push(format!("{}.*", crate::health::health_subject(user)));
                }
                sub.extend([
                    "$SRV.PING".into(),
                    "$SRV.INFO".into(),
                    "$SRV.STATS".into(),
                    format!("$SRV.*.huiqi-{user}"),
                    format!("$SRV.*.huiqi-{user}.*"),
                ]);
                sub
            },
            answers_within(SERVICE_ANSWER_WINDOW),
        ),
        "portal" => p(
            vec![
                s::APPLICATIONS_SUBMITTED.to_string(),
                format!("$JS.API.STREAM.INFO.{STREAM}"),
            ],
            strs(&[s::INTAKE_ACCEPTED, s::INTAKE_REJECTED]),
            None,
        ),
        "bureau" => {
            let mut publish = vec![format!("$JS.API.STREAM.INFO.{STREAM}")];
            for (durable, _) in topology::BUREAU_CONSUMERS {
                publish.extend(consumer_api(durable));
            }
            p(
                publish,
                strs(&["huiqi.awards.>", "huiqi.payouts.>", "huiqi.entitlements.>"]),
                None,
            )
        }
        "operator" => p(
            vec![
                "$JS.API.INFO".into(),
                format!("$JS.API.STREAM.INFO.{STREAM}"),
                format!("$JS.API.CONSUMER.INFO.{STREAM}.*"),
                format!("$JS.API.CONSUMER.LIST.{STREAM}"),
                format!("$JS.API.CONSUMER.NAMES.{STREAM}"),
                format!("$JS.API.STREAM.INFO.{}", crate::lease::bucket_stream()),
                format!("$JS.API.STREAM.MSG.GET.{}", crate::lease::bucket_stream()),
                s::QUERY_CLAIM.to_string(),
                "huiqi.health.>".into(),
                "$SRV.>".into(),
            ],
            vec![],
            None,
        ),
        "simulator" => p(
            vec![],
            strs(&["huiqi.checks.*", s::TREASURY_PAY]),
            answers_within(PROVIDER_ANSWER_WINDOW),
        ),
        "recovery" => p(recovery_publish(partitions), vec![], None),
        "query" => p(
            vec![],
            strs(&[s::QUERY_CLAIM]),
            answers_within(QUERY_ANSWER_WINDOW),
        ),
        // A named portal: publishes only on its own submit subject and reads only its own
        // answers, through its durable consumer `portal-<name>` (provisioned by the admin).
        u => {
            let name = u.strip_prefix("portal-").filter(|n| s::valid_portal(n))?;
            let mut publish = vec![
                s::portal_submit_subject(name),
                format!("$JS.API.STREAM.INFO.{STREAM}"),
            ];
            publish.extend(consumer_api(u));
            p(publish, vec![], None)
        }
    }
}

fn list(v: &[String]) -> String {
    let quoted: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// Renders a nats-server configuration: JetStream, 8 MB messages, and the users above in one
/// account, each authenticated by an nkey. `nkey(user)` gives the value written for the
/// user's public key: the key itself, or a `$VARIABLE` the server reads from its environment.
pub fn server_config(
    listen: &str,
    store_dir: &str,
    header: &str,
    users: &[String],
    partitions: u16,
    nkey: impl Fn(&str) -> String,
) -> String {
    let mut out = String::new();
    for line in header.lines() {
        out.push_str(&format!("# {line}\n"));
    }
    out.push_str(&format!(
        "listen: {listen:?}\nmax_payload: 8MB\njetstream {{\n  store_dir: {store_dir:?}\n}}\n\n"
    ));
    out.push_str("accounts {\n  HUIQI {\n    jetstream: enabled\n    users: [\n");
    for user in users {
        let p = permissions(user, partitions).expect("every listed user has permissions");
        out.push_str(&format!("      # {user}\n"));
        out.push_str(&format!("      {{ nkey: {}, permissions: {{\n", nkey(user)));
        out.push_str(&format!(
            "          publish: {{ allow: {} }}\n",
            list(&p.publish)
        ));
        out.push_str(&format!(
            "          subscribe: {{ allow: {} }}\n",
            list(&p.subscribe)
        ));
        if let Some(r) = p.allow_responses {
            out.push_str(&format!(
                "          allow_responses: {{ max: {}, expires: \"{}s\" }}\n",
                r.max,
                r.expires.as_secs()
            ));
        }
        out.push_str("      } }\n");
    }
    out.push_str("    ]\n  }\n}\n");
    out
}

/// The name every Huiqi NATS cluster carries.
pub const CLUSTER_NAME: &str = "huiqi";
/// The user cluster routes authenticate as.
pub const ROUTE_USER: &str = "huiqi-route";

/// What makes a server one node of a cluster: its name (JetStream needs one per node), where it
/// listens for routes, the route password and the routes it dials. A route URL carries the
/// credentials it dials with (`nats-route://huiqi-route:<password>@host:6222`: nats-server does
/// not lend its own cluster authorization to the routes it solicits), so the shipped file
/// reads whole route URLs from the environment. Values starting with `$` are variables.
pub struct ClusterNode {
    pub server_name: String,
    pub listen: String,
    pub password: String,
    pub routes: Vec<String>,
}

/// The lines a server configuration gains as a cluster node: `server_name` and the
/// `cluster` block. Values starting with `$` are written bare (the server reads them from its
/// environment); the rest quoted.
pub fn cluster_block(node: &ClusterNode) -> String {
    let value = |v: &str| {
        if v.starts_with('$') {
            v.to_string()
        } else {
            format!("{v:?}")
        }
    };
    let routes: Vec<String> = node.routes.iter().map(|r| value(r)).collect();
    let routes = format!("[{}]", routes.join(", "));
    format!(
        "\nserver_name: {}\ncluster {{\n  name: {CLUSTER_NAME:?}\n  listen: {:?}\n  authorization {{\n    user: {ROUTE_USER:?}\n    password: {}\n  }}\n  routes: {}\n}}\n",
        value(&node.server_name),
        node.listen,
        value(&node.password),
        routes
    )
}

/// The shipped `deploy/nats-cluster.conf`: the shipped single-server configuration (same users
/// and permissions) plus the cluster block of a node of the 3-node cluster of
/// `docker-compose.yml` (`nats-1`…`nats-3`). Each node reads its name from
/// `$HUIQI_NATS_SERVER_NAME`, the route password from `$HUIQI_ROUTE_PASSWORD` and the three
/// route URLs (with that password; a node skips the route to itself) from
/// `$HUIQI_NATS_ROUTE_1`…`3`.
pub fn shipped_cluster_config() -> String {
    cluster_config_with_portals(&[], 1)
}

/// The cluster node configuration with a user per named portal
/// (`huiqi nats-config --cluster --portal P`).
pub fn cluster_config_with_portals(portals: &[String], partitions: u16) -> String {
    let mut out = deployed_config(
        "Huiqi's nats-server configuration for one node of the 3-node cluster of\n\
         docker-compose.yml: the users and permissions of deploy/nats-server.conf, and at the end\n\
         the node's name, routes and route password, read from the environment\n\
         (HUIQI_NATS_SERVER_NAME; HUIQI_ROUTE_PASSWORD and HUIQI_NATS_ROUTE_1..3 from the\n\
         nats/cluster.env `huiqi keys generate` writes). Generated by `huiqi nats-config --cluster`\n\
         from shared/bus/src/access.rs (a test keeps the two equal; edit the Rust, not this file).\n\
         Each user's public nkey comes from the environment (HUIQI_NKEY_<USER>, nats/users.env).",
        portals,
        partitions,
    );
    out.push_str(&cluster_block(&ClusterNode {
        server_name: "$HUIQI_NATS_SERVER_NAME".into(),
        listen: "0.0.0.0:6222".into(),
        password: "$HUIQI_ROUTE_PASSWORD".into(),
        routes: (1..=3).map(|i| format!("$HUIQI_NATS_ROUTE_{i}")).collect(),
    }));
    out
}

/// The secret environment of the shipped cluster's nodes (`nats/cluster.env`, written 0600 by
/// `huiqi keys generate`): a fresh route password and the three route URLs carrying it.
pub fn cluster_env() -> String {
    let password = route_password();
    let mut out = String::from(
        "# Route password and routes of the 3-node NATS cluster (secret: the routes carry the password).\n",
    );
    out.push_str(&format!("HUIQI_ROUTE_PASSWORD={password}\n"));
    for i in 1..=3 {
        out.push_str(&format!(
            "HUIQI_NATS_ROUTE_{i}=nats-route://{ROUTE_USER}:{password}@nats-{i}:6222\n"
        ));
    }
    out
}

/// A fresh route password: a new key's public half, 56 random characters.
pub fn route_password() -> String {
    nkeys::KeyPair::new_user().public_key()
}

/// Where [`cluster_env`] is written under a keys directory.
pub fn cluster_env_path(dir: &Path) -> PathBuf {
    dir.join("nats").join("cluster.env")
}

/// The environment variable the shipped configuration reads a user's public nkey from.
pub fn nkey_variable(user: &str) -> String {
    format!("HUIQI_NKEY_{}", user.to_ascii_uppercase().replace('-', "_"))
}

/// The shipped `deploy/nats-server.conf`, exactly.
pub fn shipped_config() -> String {
    config_with_portals(&[], 1)
}

/// The shipped configuration with a user per named portal (`huiqi nats-config --portal P`),
/// for a deployment of `partitions` (`--partitions N`: each service's consumers are named).
pub fn config_with_portals(portals: &[String], partitions: u16) -> String {
    deployed_config(
        "Huiqi's nats-server configuration: JetStream, 8 MB messages, one nkey user per service and\n\
         role with least-privilege permissions. Generated by `huiqi nats-config` from\n\
         shared/bus/src/access.rs (a test keeps the two equal; edit the Rust, not this file).\n\
         Each user's public nkey comes from the environment (HUIQI_NKEY_<USER>):\n\
         `huiqi keys generate --out DIR` writes them to DIR/nats/users.env and each user's seed\n\
         to DIR/nats/<user>.seed.",
        portals,
        partitions,
    )
}

/// A deployed server's configuration (listening on every interface, its store under
/// /var/lib/nats, each user's public nkey from the environment) with this header.
fn deployed_config(header: &str, portals: &[String], partitions: u16) -> String {
    let header = if partitions > 1 {
        format!(
            "{header}\nFor a deployment of {partitions} partitions (`--partitions {partitions}`)."
        )
    } else {
        header.to_string()
    };
    server_config(
        "0.0.0.0:4222",
        "/var/lib/nats",
        &header,
        &users_with(portals),
        partitions,
        |u| format!("${}", nkey_variable(u)),
    )
}

/// The NATS user keys of a deployment: one nkey per user, seeds on disk under `nats/`.
pub struct NatsUsers {
    pub seeds: Vec<(String, String)>,
    /// The deployment's partitions, which the users' permissions name (not stored with the
    /// keys: the configuration is rendered for it). 1 unless set.
    pub partitions: u16,
}

impl NatsUsers {
    pub fn generate() -> Self {
        Self::generate_for(&[])
    }

    /// Keys for [`USERS`] and one user per named portal.
    pub fn generate_for(portals: &[String]) -> Self {
        NatsUsers {
            seeds: users_with(portals)
                .into_iter()
                .map(|u| {
                    let kp = nkeys::KeyPair::new_user();
                    (u, kp.seed().expect("new key has a seed"))
                })
                .collect(),
            partitions: 1,
        }
    }

    /// The same keys for a deployment of `partitions`.
    pub fn with_partitions(mut self, partitions: u16) -> Self {
        self.partitions = partitions;
        self
    }

    pub fn seed_path(dir: &Path, user: &str) -> PathBuf {
        dir.join("nats").join(format!("{user}.seed"))
    }

    pub fn env_path(dir: &Path) -> PathBuf {
        dir.join("nats").join("users.env")
    }

    pub fn seed(&self, user: &str) -> Option<&str> {
        self.seeds
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, s)| s.as_str())
    }

    pub fn public_key(&self, user: &str) -> Option<String> {
        self.seed(user)
            .and_then(|s| nkeys::KeyPair::from_seed(s).ok())
            .map(|k| k.public_key())
    }

    /// Writes each seed (0600) and `users.env` with the public keys the server reads.
    pub fn write(&self, dir: &Path) -> Result<(), crate::trust::TrustError> {
        let mut env = String::from("# Public nkeys of the Huiqi NATS users (not secret).\n");
        for (user, seed) in &self.seeds {
            crate::trust::write_secret(&Self::seed_path(dir, user), seed)?;
            env.push_str(&format!(
                "{}={}\n",
                nkey_variable(user),
                self.public_key(user).expect("valid seed")
            ));
        }
        let path = Self::env_path(dir);
        std::fs::write(&path, env).map_err(|source| crate::trust::TrustError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// The users of this key set, in configuration order.
    pub fn users(&self) -> Vec<String> {
        self.seeds.iter().map(|(u, _)| u.clone()).collect()
    }

    /// Loads [`USERS`] and every `portal-<name>.seed` found beside them.
    pub fn load(dir: &Path) -> Result<Self, crate::trust::TrustError> {
        let mut seeds = Vec::new();
        let mut names: Vec<String> = USERS.iter().map(|u| u.to_string()).collect();
        let mut portals: Vec<String> = std::fs::read_dir(dir.join("nats"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                let user = n.strip_suffix(".seed")?.to_string();
                permissions(&user, 1).is_some().then_some(user)
            })
            .filter(|u| u.starts_with("portal-"))
            .collect();
        portals.sort();
        names.extend(portals);
        for u in &names {
            let u = u.as_str();
            let path = Self::seed_path(dir, u);
            let seed = std::fs::read_to_string(&path)
                .map_err(|source| crate::trust::TrustError::Io {
                    path: path.display().to_string(),
                    source,
                })?
                .trim()
                .to_string();
            nkeys::KeyPair::from_seed(&seed).map_err(|_| crate::trust::TrustError::Key {
                origin: path.display().to_string(),
                message: "not a valid nkey seed".into(),
            })?;
            seeds.push((u.to_string(), seed));
        }
        Ok(NatsUsers {
            seeds,
            partitions: 1,
        })
    }

    /// Loads the key set under `dir`, generating it when missing and adding a key for each
    /// named portal that has none yet.
    pub fn load_or_generate(
        dir: &Path,
        portals: &[String],
    ) -> Result<Self, crate::trust::TrustError> {
        if Self::env_path(dir).exists() {
            let mut users = Self::load(dir)?;
            let missing: Vec<String> = portals
                .iter()
                .map(|p| portal_user(p))
                .filter(|u| users.seed(u).is_none())
                .collect();
            if !missing.is_empty() {
                for u in missing {
                    let kp = nkeys::KeyPair::new_user();
                    users
                        .seeds
                        .push((u, kp.seed().expect("new key has a seed")));
                }
                users.write(dir)?;
            }
            Ok(users)
        } else {
            let users = Self::generate_for(portals);
            users.write(dir)?;
            Ok(users)
        }
    }

    /// Connection options for `user` against `url`: its nkey and its own reply prefix.
    pub fn options(&self, user: &str, url: &str) -> crate::NatsOptions {
        crate::NatsOptions::new(url)
            .with_nkey(self.seed(user).expect("known user"))
            .with_inbox_prefix(&inbox_prefix(user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_looks_for_a_services_events_only_where_it_may_publish_them() {
        use crate::topology::subject_matches;
        let award = event_subjects("award");
        for subject in [
            s::PAYMENT_ORDERED,
            "huiqi.awards.approved.M1",
            "huiqi.awards.rejected.M9",
            s::ENTITLEMENT_DATA_PACKAGE,
            "huiqi.parked.award",
        ] {
            assert!(
                award.iter().any(|f| subject_matches(f, subject)),
                "{subject}"
            );
        }
        assert!(!award.iter().any(|f| subject_matches(f, s::CLAIM_VERIFIED)));
        let intake = event_subjects("intake");
        assert!(intake
            .iter()
            .any(|f| subject_matches(f, "huiqi.intake.accepted.city-portal")));
        for service in ["intake", "verification", "award", "payout"] {
            assert!(event_subjects(service).iter().all(|x| !x.starts_with('$')));
        }
    }

    #[test]
    fn only_award_publishes_payment_orders_and_only_admin_touches_the_api_broadly() {
        for user in USERS {
            let p = permissions(user, 1).unwrap();
            let orders = p
                .publish
                .iter()
                .any(|x| x == s::PAYMENT_ORDERED || x == ">" || x == "huiqi.internal.>");
            assert_eq!(orders, *user == "award" || *user == "admin", "{user}");
            let broad_api = p.publish.iter().any(|x| {
                x == ">"
                    || x.starts_with("$JS.API.>")
                    || x.contains("DELETE")
                    || x.contains("PURGE")
                    || x.contains("CREATE")
            });
            // Recovery (a standby rebuilding a log) creates readers and rewinds the four
            // services' consumers; it never touches a stream.
            assert_eq!(broad_api, *user == "admin" || *user == "recovery", "{user}");
            if *user == "recovery" {
                for x in &p.publish {
                    assert!(
                        x.starts_with("$JS.API.CONSUMER.") || x == "$JS.API.STREAM.INFO.HUIQI",
                        "{x}"
                    );
                    let own = topology::SERVICE_CONSUMERS
                        .iter()
                        .any(|(s, _)| x.ends_with(&format!(".{s}")));
                    assert!(!x.contains("DELETE") || own, "{x}");
                }
            }
            let internal_read = p
                .subscribe
                .iter()
                .any(|x| x.starts_with("huiqi.internal") || x == ">");
            assert_eq!(internal_read, *user == "admin", "{user}");
        }
    }

    #[test]
    fn split_services_use_only_their_own_partitions_consumers() {
        use crate::topology::subject_matches;
        let award = permissions("award", 2).unwrap().publish;
        for durable in ["award-p0", "award-p1"] {
            assert!(award.contains(&format!("$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{durable}")));
        }
        // Not the unsplit consumer, nor another service's, nor a partition that does not exist.
        for other in ["award", "payout-p0", "award-p2"] {
            let consumer_api =
                |x: &&String| x.starts_with("$JS.API.CONSUMER.") || x.starts_with("$JS.ACK.");
            assert!(
                !award
                    .iter()
                    .filter(consumer_api)
                    .any(|x| x.ends_with(&format!(".{other}")) || x.contains(&format!(".{other}."))),
                "{other}"
            );
        }
        let p1 = huiqi_events::Partition::new(1, 2).unwrap();
        assert!(award
            .iter()
            .any(|f| subject_matches(f, &p1.subject(s::PAYMENT_ORDERED))));
        assert!(!award
            .iter()
            .any(|f| subject_matches(f, &p1.subject(s::CLAIM_VERIFIED))));
        let intake = permissions("intake", 2).unwrap();
        assert!(intake
            .publish
            .iter()
            .any(|f| subject_matches(f, &p1.subject(s::CLAIM_OPENED))));
        // Intake is not split: its one consumer, as unsplit.
        assert!(intake
            .publish
            .contains(&format!("$JS.API.CONSUMER.MSG.NEXT.{STREAM}.intake")));
        let recovery = permissions("recovery", 2).unwrap().publish;
        assert!(recovery.contains(&format!("$JS.API.CONSUMER.DELETE.{STREAM}.payout-p1")));
        // Split, only award takes the counts that cross partitions; unsplit nobody.
        let counts = format!("$KV.{}.>", crate::reserve::BUCKET);
        assert!(award.contains(&counts));
        assert!(!permissions("verification", 2)
            .unwrap()
            .publish
            .contains(&counts));
        assert!(!permissions("award", 1).unwrap().publish.contains(&counts));
        // Unsplit, nothing changes: no partition names at all.
        assert!(!permissions("award", 1)
            .unwrap()
            .publish
            .iter()
            .any(|x| x.contains("-p")));
    }
}
