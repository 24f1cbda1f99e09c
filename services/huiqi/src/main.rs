//! `huiqi` — run, drive and audit the Huiqi pipeline. Thin: parsing and printing only.

/// mimalloc: glibc malloc was a fifth of all CPU under load (README, "Performance").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "huiqi",
    version,
    about = "Huiqi (惠企) subsidy claims pipeline"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Where one service's log is, for the offline tools (audit, replay, whatif), when the
    /// services keep separate data directories: SERVICE=DIR, repeatable (default
    /// DATA_DIR/<service>).
    #[arg(long = "log-dir", global = true, value_parser = parse_log_dir)]
    log_dirs: Vec<(String, PathBuf)>,
}

fn parse_log_dir(s: &str) -> Result<(String, PathBuf), String> {
    let (service, dir) = s
        .split_once('=')
        .ok_or_else(|| "expected SERVICE=DIR, e.g. award=/var/lib/huiqi-award/award".to_string())?;
    Ok((service.to_string(), PathBuf::from(dir)))
}

/// `--cluster`: one server, or a cluster that survives losing a node (3 or 5).
fn parse_cluster(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n @ (1 | 3 | 5)) => Ok(n),
        _ => Err("1 (one server), 3 or 5 (a cluster keeps working with a minority down)".into()),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run every service (and the provider simulator) in one process until Ctrl-C or SIGTERM.
    Up {
        /// Connect to the NATS of --nats-url (NATS_URL) instead of starting a private,
        /// authenticated nats-server; every component then logs in with the --nats-*
        /// credentials given.
        #[arg(long)]
        external_nats: bool,
        #[command(flatten)]
        nats: huiqi_bus::NatsArgs,
        /// Port of the private nats-server (default: 4222 when free, else a free one); with
        /// --cluster, of its first node (the others take the next ports).
        #[arg(long)]
        port: Option<u16>,
        /// Run the private NATS as a cluster of 3 (or 5) nodes on loopback, the stream at
        /// three replicas: for trying failover on one machine.
        #[arg(long, default_value_t = 1, value_parser = parse_cluster)]
        cluster: usize,
        /// Serve Prometheus metrics of every service on this address (`GET /metrics`).
        #[arg(long, env = "HUIQI_METRICS_ADDR")]
        metrics_addr: Option<std::net::SocketAddr>,
        /// A named portal (repeatable): its own NATS user `portal-<name>`, which may publish
        /// only on huiqi.applications.submitted.<name> and reads only its own answers through
        /// the durable consumer `portal-<name>`.
        #[arg(long = "portal", value_parser = parse_portal)]
        portals: Vec<String>,

        #[arg(long, env = "HUIQI_DATA_DIR", default_value = "huiqi-data")]
        data_dir: PathBuf,
        /// Signing keys, trust file and NATS user keys (default: DATA_DIR/keys, generated
        /// when missing).
        #[arg(long)]
        keys_dir: Option<PathBuf>,
        /// Fixture folder for the provider simulator; without it no simulator runs.
        #[arg(long)]
        fixtures: Option<PathBuf>,
        /// Operator-loaded policy versions, besides the built-in ones.
        #[arg(long, env = "HUIQI_POLICY_DIR")]
        policy_dir: Option<PathBuf>,
        #[command(flatten)]
        stream: huiqi_bus::setup::StreamSettings,
    },
    /// Start everything on the sample data, submit the sample applications, print the outcomes.
    Demo {
        #[arg(long, default_value = "deploy/sample")]
        sample: PathBuf,
        /// Where the logs go (default: a fresh temporary directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
    /// Publish application files (application data or whole CloudEvents) to the portal subject.
    Submit {
        #[command(flatten)]
        nats: huiqi_bus::NatsArgs,
        files: Vec<PathBuf>,
    },
    /// Show the stream, the consumers' backlog, in-flight and redelivered counts, and parked
    /// messages per service.
    Status {
        #[command(flatten)]
        nats: huiqi_bus::NatsArgs,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask the running pipeline for one claim's state and timeline (huiqi.query.claim).
    Query {
        #[command(flatten)]
        nats: huiqi_bus::NatsArgs,
        #[arg(long)]
        claim_id: Option<String>,
        #[arg(long)]
        application_id: Option<String>,
    },
    /// List parked (poison) messages and unpublishable events; --republish SEQ sends one back
    /// after its cause is fixed (needs the admin's credentials).
    Parked {
        #[command(flatten)]
        nats: huiqi_bus::NatsArgs,
        /// The original stream sequence of the parked message to republish.
        #[arg(long)]
        republish: Option<u64>,
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Provision the stream (explicit retention and limits) and every durable consumer: the
    /// admin's step before services start on a least-privilege bus.
    Setup {
        #[command(flatten)]
        nats: huiqi_bus::NatsArgs,
        #[command(flatten)]
        stream: huiqi_bus::setup::StreamSettings,
        /// A named portal (repeatable): its own NATS user `portal-<name>`, which may publish
        /// only on huiqi.applications.submitted.<name> and reads only its own answers through
        /// the durable consumer `portal-<name>`.
        #[arg(long = "portal", value_parser = parse_portal)]
        portals: Vec<String>,
    },
    /// Rebuild lost service logs from the JetStream stream (signatures checked), then start
    /// the services again. Needs the admin's credentials; the services must be stopped.
    Restore {
        #[command(flatten)]
        nats: huiqi_bus::NatsArgs,
        /// The service to restore (intake, verification, award, payout); repeat for several.
        #[arg(long = "service", required_unless_present = "all")]
        services: Vec<String>,
        /// Restore all four.
        #[arg(long, conflicts_with = "services")]
        all: bool,
        #[arg(long, env = "HUIQI_DATA_DIR", default_value = "huiqi-data")]
        data_dir: PathBuf,
        /// The trust file whose keys vouch for the stream's events.
        #[arg(long, env = "HUIQI_TRUST_FILE")]
        trust_file: PathBuf,
        /// The deployment's partitions: a split service's are rebuilt one by one, each into
        /// `<data-dir>/<service>/p<i>`.
        #[arg(long, env = "HUIQI_PARTITIONS", default_value_t = 1,
              value_parser = clap::value_parser!(u16).range(1..=huiqi_events::partition::MAX_PARTITIONS as i64))]
        partitions: u16,
    },
    /// Key material for a deployment.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Ask one running service for its health (`huiqi.health.<service>`); exit 0 when it
    /// answers (status ok or degraded, printed), 1 when it does not. For container healthchecks.
    Health {
        #[command(flatten)]
        nats: huiqi_bus::NatsArgs,
        #[arg(long)]
        service: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the machine-readable contract: AsyncAPI 3 and a JSON Schema per payload,
    /// generated from the types the services use (docs/contract is this output).
    Contract {
        #[arg(long, default_value = "docs/contract")]
        out: PathBuf,
    },
    /// Print the nats-server configuration (users and permissions) that deploy/ ships.
    NatsConfig {
        /// A named portal (repeatable): its own NATS user `portal-<name>`, which may publish
        /// only on huiqi.applications.submitted.<name> and reads only its own answers through
        /// the durable consumer `portal-<name>`.
        #[arg(long = "portal", value_parser = parse_portal)]
        portals: Vec<String>,
        /// The configuration of a node of the 3-node cluster (deploy/nats-cluster.conf):
        /// the same users, plus server name, routes and route password from the environment.
        #[arg(long)]
        cluster: bool,
        /// The deployment's partitions (as given to `huiqi setup`): each split service's
        /// consumers `<service>-p<i>` are named in its permissions.
        #[arg(long, env = "HUIQI_PARTITIONS", default_value_t = 1,
              value_parser = clap::value_parser!(u16).range(1..=huiqi_events::partition::MAX_PARTITIONS as i64))]
        partitions: u16,
    },
    /// Decide an application offline; prints the award event's data.
    Evaluate {
        #[arg(long)]
        application: PathBuf,
        #[arg(long)]
        facts: PathBuf,
        #[arg(long)]
        policy_version: Option<String>,
        /// Earlier counts (a History JSON list of {measure, kind, uscc, item, person,
        /// claim_id, by, amount}) for caps, one-per-person rules and cumulative thresholds.
        #[arg(long)]
        history: Option<PathBuf>,
        /// Operator-loaded policy versions, besides the built-in ones.
        #[arg(long, env = "HUIQI_POLICY_DIR")]
        policy_dir: Option<PathBuf>,
    },
    /// Re-derive every award decision from the award log and report differences.
    Replay {
        #[arg(long, default_value = "huiqi-data")]
        data_dir: PathBuf,
        /// Operator-loaded policy versions the decisions were made under.
        #[arg(long, env = "HUIQI_POLICY_DIR")]
        policy_dir: Option<PathBuf>,
        /// Print the report as JSON (every difference in full).
        #[arg(long)]
        json: bool,
    },
    /// Verify the hash chain of every service log (services must be stopped).
    #[command(args_conflicts_with_subcommands = true)]
    Audit {
        #[command(subcommand)]
        what: Option<AuditWhat>,
        /// Audit the running services' logs through them (over NATS, operator's login)
        /// instead of opening the logs under --data-dir.
        #[arg(long)]
        live: bool,
        #[command(flatten)]
        nats: huiqi_bus::NatsArgs,
        #[arg(long, default_value = "huiqi-data")]
        data_dir: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Turn what a later policy version would pay more into supplementary awards, paid once
    /// through the normal pipeline. Without --confirm it only shows the plan and its digest;
    /// with --confirm DIGEST (the digest shown) it writes them to the award log, which must be
    /// stopped; award publishes them (signed) when it starts, and payout pays each once.
    Supplement {
        #[command(flatten)]
        under: UnderVersion,
        /// The plan's digest, as shown by a run without it.
        #[arg(long)]
        confirm: Option<String>,
    },
    /// Re-decide every recorded claim under another policy version (nothing is written):
    /// per measure, how many decisions and how much money would change, and which claims.
    Whatif {
        #[command(flatten)]
        under: UnderVersion,
    },
    /// (Re)write the sample fixtures and applications from the generators.
    #[command(hide = true)]
    Sample {
        #[arg(long, default_value = "deploy/sample")]
        out: PathBuf,
    },
    /// Push generated M1 applications through an in-process pipeline and print throughput,
    /// latency, messages and bytes per claim per service and peak memory.
    Loadgen {
        /// Applications, all at once (ignored with --rate).
        #[arg(long, default_value_t = 10_000)]
        applications: usize,
        #[arg(long, default_value_t = 40)]
        persons: usize,
        /// Open loop: submit this many claims per second, each at its intended time, and
        /// measure latency from that time.
        #[arg(long, requires = "duration_secs")]
        rate: Option<f64>,
        /// With --rate: for how long.
        #[arg(long)]
        duration_secs: Option<u64>,
        /// Also measure the machine's ceiling (raw JetStream and sled) with the same message
        /// sizes.
        #[arg(long)]
        probe: bool,
        /// Write the figures as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, default_value_t = 1800)]
        timeout_secs: u64,
        /// Run on a private NATS cluster of this many nodes on loopback (stream at R3), to
        /// measure what replication costs.
        #[arg(long, default_value_t = 1, value_parser = parse_cluster)]
        cluster: usize,
        /// Split verification, award and payout into this many partitions, a worker each in
        /// this process (award then decides on several cores).
        #[arg(long, default_value_t = 1,
              value_parser = clap::value_parser!(u16).range(1..=huiqi_events::partition::MAX_PARTITIONS as i64))]
        partitions: u16,
    },
}

/// The recorded claims of an award log, to be decided again under another policy version.
#[derive(clap::Args)]
struct UnderVersion {
    #[arg(long, default_value = "huiqi-data")]
    data_dir: PathBuf,
    /// The version to apply (built in, or loaded from --policy-dir).
    #[arg(long)]
    policy_version: String,
    /// Operator-loaded policy versions (the recorded decisions' and the one to apply).
    #[arg(long, env = "HUIQI_POLICY_DIR")]
    policy_dir: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

/// `huiqi audit` without a subcommand verifies the hash chains.
// Parsed once per run: the size of a variant does not matter here.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum AuditWhat {
    /// Reconcile: committed and paid totals per measure; every approved award ordered once and
    /// paid once or failed with a reason; sums agree with the treasury ledger. Exit 4 on any
    /// disagreement.
    Report {
        #[arg(long, default_value = "huiqi-data")]
        data_dir: PathBuf,
        /// The treasury ledger (default: DATA_DIR/treasury-ledger.jsonl when present).
        #[arg(long)]
        ledger: Option<PathBuf>,
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// Per-measure totals as CSV.
        #[arg(long)]
        csv: bool,
    },
    /// Check every service log against the heads it anchored on the stream (signed
    /// `huiqi.log.head.v1` events): a log rewritten on its disk, even with its hash chain
    /// recomputed, no longer matches. Needs the admin's login (it reads the stream) and the
    /// services stopped. Exit 4 on any mismatch.
    Heads {
        #[command(flatten)]
        nats: huiqi_bus::NatsArgs,
        #[arg(long, default_value = "huiqi-data")]
        data_dir: PathBuf,
        #[arg(long, env = "HUIQI_TRUST_FILE")]
        trust_file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// One claim's whole story across the four logs: events in order, facts used, lines and
    /// the rules they quote. Identity numbers are masked unless --reveal (which is logged).
    Claim {
        /// A claim id (C-…) or an application id.
        id: String,
        #[arg(long, default_value = "huiqi-data")]
        data_dir: PathBuf,
        /// JSON Lines, one event per line.
        #[arg(long)]
        json: bool,
        #[arg(long)]
        reveal: bool,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write a signing key per service, the trust file, and an nkey per NATS user.
    Generate {
        #[arg(long)]
        out: PathBuf,
        /// A named portal (repeatable): its own NATS user `portal-<name>`, which may publish
        /// only on huiqi.applications.submitted.<name> and reads only its own answers through
        /// the durable consumer `portal-<name>`.
        #[arg(long = "portal", value_parser = parse_portal)]
        portals: Vec<String>,

        /// Replace keys that exist.
        #[arg(long)]
        force: bool,
    },
}

fn parse_portal(s: &str) -> Result<String, String> {
    if huiqi_events::subjects::valid_portal(s) {
        Ok(s.to_string())
    } else {
        Err("a portal name is 1-32 of a-z, 0-9 and -".into())
    }
}

fn init_tracing(default: &str) {
    huiqi_bus::telemetry::init(default);
}

fn temp_or(dir: Option<PathBuf>) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    Ok(match dir {
        Some(d) => (d, None),
        None => {
            let t = tempfile::tempdir().context("creating a temporary data dir")?;
            (t.path().to_path_buf(), Some(t))
        }
    })
}

/// Exit codes: 0 done, 1 failed, 2 bad usage (clap), 3 not found (a claim, a parked message, a
/// data directory), 4 a check found a problem (audit, replay, a load that did not settle).
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let code = if e
                .chain()
                .any(|c| matches!(c.downcast_ref(), Some(huiqi::HuiqiError::NotFound(_))))
            {
                3
            } else if e.downcast_ref::<Problem>().is_some() {
                4
            } else {
                1
            };
            std::process::ExitCode::from(code)
        }
    }
}

/// A check that ran and found a problem (exit code 4).
#[derive(Debug)]
struct Problem(String);

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Problem {}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    huiqi::commands::set_log_dirs(&cli.log_dirs)?;
    match cli.command {
        Command::Up {
            external_nats,
            nats,
            port,
            cluster,
            metrics_addr,
            portals,
            data_dir,
            keys_dir,
            fixtures,
            policy_dir,
            stream,
        } => {
            init_tracing("info");
            if let Some(addr) = metrics_addr {
                huiqi_bus::health::serve_metrics(addr).map_err(anyhow::Error::msg)?;
                println!("metrics: http://{addr}/metrics");
            }
            let mut s = huiqi::UpSettings::new(&data_dir, fixtures.as_deref());
            if external_nats {
                s.nats = Some(nats.options());
            }
            // The port the other commands default to (NATS_URL unset), when it is free.
            s.port = port.or_else(|| {
                (4222..4222 + cluster as u16)
                    .all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
                    .then_some(4222)
            });
            s.cluster = cluster;
            s.portals = portals;
            s.keys_dir = keys_dir;
            s.policy_dir = policy_dir;
            s.stream = stream;
            let stop = huiqi_bus::service::shutdown_signal();
            let pipeline = huiqi::Pipeline::start(&s)
                .await
                .context("starting the pipeline")?;
            let keys = s.keys_dir();
            println!(
                "huiqi up: NATS {} — Ctrl-C or SIGTERM to stop\n  keys: {} (signing/, trust.json, nats/<user>.seed)\n  e.g. NATS_URL={} NATS_NKEY={} NATS_INBOX_PREFIX=_INBOX_operator huiqi status",
                pipeline.url(),
                keys.display(),
                pipeline.url(),
                huiqi_bus::access::NatsUsers::seed_path(&keys, "operator").display(),
            );
            pipeline.run_until(stop).await.context("pipeline")?;
        }
        Command::Demo {
            sample,
            data_dir,
            timeout_secs,
        } => {
            init_tracing("warn");
            let (dir, _keep) = temp_or(data_dir)?;
            let table =
                huiqi::commands::demo(&sample, &dir, Duration::from_secs(timeout_secs)).await?;
            println!("{table}");
        }
        Command::Submit { nats, files } => {
            init_tracing("warn");
            // Every file is read first; if any is unreadable nothing is published and each
            // bad file is named.
            let mut events = Vec::new();
            let mut bad = Vec::new();
            for f in &files {
                match huiqi::commands::read_application(f) {
                    Ok((app, env)) => events.push((f, app.application_id, env)),
                    Err(e) => bad.push(format!("{}: {e}", f.display())),
                }
            }
            if !bad.is_empty() {
                for b in &bad {
                    eprintln!("{b}");
                }
                anyhow::bail!(
                    "{} of {} files unreadable: nothing was published",
                    bad.len(),
                    files.len()
                );
            }
            let client = nats.options().connect("huiqi-submit").await?;
            let js = async_nats::jetstream::new(client);
            let envs: Vec<_> = events.iter().map(|(_, _, e)| e.clone()).collect();
            huiqi::watch::publish_all(&js, &envs, 256).await?;
            for (f, id, env) in &events {
                println!("{}  {}  event {}  published", f.display(), id, env.id);
            }
            println!(
                "published {} applications (acked by JetStream)",
                events.len()
            );
        }
        Command::Status { nats, json } => {
            init_tracing("warn");
            let report = huiqi::status::status(&nats.options()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
        }
        Command::Query {
            nats,
            claim_id,
            application_id,
        } => {
            init_tracing("warn");
            println!(
                "{}",
                huiqi::commands::query(
                    &nats.options(),
                    claim_id.as_deref(),
                    application_id.as_deref()
                )
                .await?
            );
        }
        Command::Parked {
            nats,
            republish,
            json,
        } => {
            init_tracing("warn");
            print!(
                "{}",
                huiqi::commands::parked(&nats.options(), republish, json).await?
            );
        }
        Command::Setup {
            nats,
            stream,
            portals,
        } => {
            init_tracing("warn");
            print!(
                "{}",
                huiqi::commands::setup(&nats.options(), &stream, &portals).await?
            );
        }
        Command::Restore {
            nats,
            services,
            all,
            data_dir,
            trust_file,
            partitions,
        } => {
            init_tracing("info");
            let trust = huiqi_bus::trust::TrustStore::from_file(&trust_file)?;
            let services: Vec<String> = if all {
                huiqi::commands::SERVICES
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            } else {
                services
            };
            print!(
                "{}",
                huiqi::commands::restore(&nats.options(), &data_dir, &services, partitions, &trust)
                    .await?
            );
        }
        Command::Keys {
            command:
                KeysCommand::Generate {
                    out,
                    force,
                    portals,
                },
        } => {
            print!("{}", huiqi::commands::keys_generate(&out, force, &portals)?);
        }
        Command::Health {
            nats,
            service,
            json,
        } => {
            init_tracing("warn");
            let client = nats.options().connect("huiqi-health").await?;
            let report = huiqi::status::health(&client, &service).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{} {}: received {}, parked {}, relay backlog {}",
                    report.service,
                    report.status,
                    report.received,
                    report.parked,
                    report.relay_backlog
                );
            }
        }
        Command::Contract { out } => {
            print!("{}", huiqi::commands::write_contract(&out)?);
        }
        Command::NatsConfig {
            portals,
            cluster,
            partitions,
        } => {
            if cluster {
                print!(
                    "{}",
                    huiqi_bus::access::cluster_config_with_portals(&portals, partitions)
                );
            } else {
                print!(
                    "{}",
                    huiqi_bus::access::config_with_portals(&portals, partitions)
                );
            }
        }
        Command::Evaluate {
            application,
            facts,
            policy_version,
            history,
            policy_dir,
        } => {
            let out = huiqi::commands::evaluate(
                &application,
                &facts,
                policy_version.as_deref(),
                history.as_deref(),
                policy_dir.as_deref(),
            )?;
            println!("{out}");
        }
        Command::Replay {
            data_dir,
            policy_dir,
            json,
        } => {
            let (out, same) = if json {
                let r = huiqi::commands::replay_report(&data_dir, policy_dir.as_deref())?;
                let same = r.differences.is_empty();
                (serde_json::to_string_pretty(&r)? + "\n", same)
            } else {
                huiqi::commands::replay(&data_dir, policy_dir.as_deref())?
            };
            print!("{out}");
            if !same {
                return Err(Problem("replay differs from the recorded decisions".into()).into());
            }
        }
        Command::Audit {
            what:
                Some(AuditWhat::Report {
                    data_dir,
                    ledger,
                    json,
                    csv,
                }),
            ..
        } => {
            let r = huiqi::audit::report(&data_dir, ledger.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else if csv {
                print!("{}", r.csv());
            } else {
                print!("{}", r.render());
            }
            if !r.problems.is_empty() {
                return Err(
                    Problem(format!("{} reconciliation problems", r.problems.len())).into(),
                );
            }
        }
        Command::Audit {
            what:
                Some(AuditWhat::Claim {
                    id,
                    data_dir,
                    json,
                    reveal,
                }),
            ..
        } => {
            init_tracing("warn");
            let story = huiqi::audit::claim_story(&data_dir, &id, reveal)?;
            if json {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                for e in &story {
                    // A reader that stops early (`| head`) ends the output, not the program.
                    if writeln!(out, "{}", serde_json::to_string(e)?).is_err() {
                        break;
                    }
                }
            } else {
                print!("{}", huiqi::audit::render_story(&story));
            }
        }
        Command::Audit {
            what:
                Some(AuditWhat::Heads {
                    nats,
                    data_dir,
                    trust_file,
                    json,
                }),
            ..
        } => {
            init_tracing("warn");
            let trust = huiqi_bus::trust::TrustStore::from_file(&trust_file)?;
            let checks = huiqi::audit::check_heads(&nats.options(), &data_dir, &trust).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&checks)?);
            } else {
                print!("{}", huiqi::audit::render_heads(&checks));
            }
            let bad: usize = checks
                .iter()
                .map(|c| c.mismatches.len() + c.refused.len())
                .sum();
            if bad > 0 {
                return Err(
                    Problem(format!("{bad} anchored heads disagree or were refused")).into(),
                );
            }
        }
        Command::Supplement { under, confirm } => {
            init_tracing("warn");
            let r = huiqi::commands::supplement(
                &under.data_dir,
                under.policy_dir.as_deref(),
                &under.policy_version,
                confirm.as_deref(),
            )?;
            if under.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", huiqi::commands::render_supplement(&r));
            }
        }
        Command::Whatif { under } => {
            let r = huiqi::commands::whatif(
                &under.data_dir,
                under.policy_dir.as_deref(),
                &under.policy_version,
            )?;
            if under.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", huiqi::commands::render_whatif(&r));
            }
        }
        Command::Audit {
            what: None,
            live: true,
            nats,
            json,
            ..
        } => {
            init_tracing("warn");
            let client = nats.options().connect("huiqi-audit-live").await?;
            let mut reports = Vec::new();
            for s in huiqi::commands::SERVICES {
                reports.push(huiqi::status::live_audit(&client, s).await?);
            }
            let logs: Vec<huiqi::commands::LogAudit> = reports
                .iter()
                .map(|r| {
                    let a = r.audit.clone().expect("asked for");
                    huiqi::commands::LogAudit {
                        service: r.service.clone(),
                        path: "(live, audited by the service)".into(),
                        present: true,
                        records: a.records,
                        bytes: a.bytes,
                        head_hash: a.head_hash,
                        problems: a.problems,
                    }
                })
                .collect();
            let problems: usize = logs.iter().map(|a| a.problems.len()).sum();
            if json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            } else {
                print!("{}", huiqi::commands::render_audit(&logs));
            }
            if problems > 0 {
                return Err(Problem("audit found problems".into()).into());
            }
        }
        Command::Audit {
            what: None,
            data_dir,
            json,
            ..
        } => {
            let (out, clean) = if json {
                let logs = huiqi::commands::audit_logs(&data_dir)?;
                let clean = logs.iter().all(|l| l.problems.is_empty());
                (serde_json::to_string_pretty(&logs)? + "\n", clean)
            } else {
                huiqi::commands::audit(&data_dir)?
            };
            print!("{out}");
            if !clean {
                return Err(Problem("audit found problems".into()).into());
            }
        }
        Command::Sample { out } => {
            huiqi::gen::write_sample(&out).with_context(|| format!("writing {}", out.display()))?;
            println!("sample written to {}", out.display());
        }
        Command::Loadgen {
            applications,
            persons,
            rate,
            duration_secs,
            probe,
            json,
            data_dir,
            timeout_secs,
            cluster,
            partitions,
        } => {
            init_tracing("warn");
            let (dir, _keep) = temp_or(data_dir)?;
            let applications = match (rate, duration_secs) {
                (Some(r), Some(d)) => (r * d as f64).round() as usize,
                _ => applications,
            };
            let settings = huiqi::loadgen::LoadSettings {
                applications,
                persons,
                rate,
                timeout: Duration::from_secs(timeout_secs),
                probe,
                cluster,
                partitions,
            };
            let report = huiqi::loadgen::run(&settings, &dir).await?;
            println!("{report}");
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if report.settled < report.applications {
                return Err(Problem(format!(
                    "only {} of {} claims settled within the limit",
                    report.settled, report.applications
                ))
                .into());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
