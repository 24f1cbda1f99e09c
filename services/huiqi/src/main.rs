//! `huiqi` — run, drive and audit the Huiqi pipeline. Thin: parsing and printing only.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "huiqi",
    version,
    about = "Huiqi (惠企) subsidy claims pipeline"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every service (and the provider simulator) in one process until Ctrl-C.
    Up {
        /// NATS URL; without it a private nats-server is started under the data dir.
        #[arg(long)]
        nats_url: Option<String>,
        #[arg(long, default_value = "huiqi-data")]
        data_dir: PathBuf,
        /// Fixture folder for the provider simulator; without it no simulator runs.
        #[arg(long)]
        fixtures: Option<PathBuf>,
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
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        files: Vec<PathBuf>,
    },
    /// Show the stream and the consumers' backlog, in-flight and redelivered counts.
    Status {
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
    },
    /// Ask the running pipeline for one claim's state and timeline (huiqi.query.claim).
    Query {
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        #[arg(long)]
        claim_id: Option<String>,
        #[arg(long)]
        application_id: Option<String>,
    },
    /// List parked (poison) messages; --republish SEQ sends one back after its cause is fixed.
    Parked {
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        /// The original stream sequence of the parked message to republish.
        #[arg(long)]
        republish: Option<u64>,
    },
    /// Decide an application offline; prints the award event's data.
    Evaluate {
        #[arg(long)]
        application: PathBuf,
        #[arg(long)]
        facts: PathBuf,
        #[arg(long)]
        policy_version: Option<String>,
        /// Earlier awards (History JSON) for caps and one-per-person rules.
        #[arg(long)]
        history: Option<PathBuf>,
    },
    /// Re-derive every award decision from the award log and report differences.
    Replay {
        #[arg(long, default_value = "huiqi-data")]
        data_dir: PathBuf,
    },
    /// Verify the hash chain of every service log (services must be stopped).
    Audit {
        #[arg(long, default_value = "huiqi-data")]
        data_dir: PathBuf,
    },
    /// (Re)write the sample fixtures and applications from the generators.
    #[command(hide = true)]
    Sample {
        #[arg(long, default_value = "deploy/sample")]
        out: PathBuf,
    },
    /// Push generated M1 applications through an in-process pipeline and print throughput.
    Loadgen {
        #[arg(long, default_value_t = 10_000)]
        applications: usize,
        #[arg(long, default_value_t = 40)]
        persons: usize,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, default_value_t = 1800)]
        timeout_secs: u64,
    },
}

fn init_tracing(default: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Up {
            nats_url,
            data_dir,
            fixtures,
        } => {
            init_tracing("info");
            let mut s = huiqi::UpSettings::new(&data_dir, fixtures.as_deref());
            s.nats_url = nats_url;
            let pipeline = huiqi::Pipeline::start(&s)
                .await
                .context("starting the pipeline")?;
            println!("huiqi up: NATS {} — Ctrl-C to stop", pipeline.url());
            let stop = CancellationToken::new();
            let st = stop.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                st.cancel();
            });
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
        Command::Submit { nats_url, files } => {
            init_tracing("warn");
            let client = huiqi_bus::connect(&nats_url, "huiqi-submit").await?;
            let js = async_nats::jetstream::new(client);
            let mut events = Vec::new();
            for f in &files {
                let (app, env) = huiqi::commands::read_application(f)?;
                println!("{}  {}  event {}", f.display(), app.application_id, env.id);
                events.push(env);
            }
            huiqi::watch::publish_all(&js, &events, 256).await?;
            println!(
                "published {} applications (acked by JetStream)",
                events.len()
            );
        }
        Command::Status { nats_url } => {
            print!("{}", huiqi::commands::status(&nats_url).await?);
        }
        Command::Query {
            nats_url,
            claim_id,
            application_id,
        } => {
            println!(
                "{}",
                huiqi::commands::query(&nats_url, claim_id.as_deref(), application_id.as_deref())
                    .await?
            );
        }
        Command::Parked {
            nats_url,
            republish,
        } => {
            print!("{}", huiqi::commands::parked(&nats_url, republish).await?);
        }
        Command::Evaluate {
            application,
            facts,
            policy_version,
            history,
        } => {
            let out = huiqi::commands::evaluate(
                &application,
                &facts,
                policy_version.as_deref(),
                history.as_deref(),
            )?;
            println!("{out}");
        }
        Command::Replay { data_dir } => {
            let (out, same) = huiqi::commands::replay(&data_dir)?;
            print!("{out}");
            if !same {
                anyhow::bail!("replay differs from the recorded decisions");
            }
        }
        Command::Audit { data_dir } => {
            let (out, clean) = huiqi::commands::audit(&data_dir)?;
            print!("{out}");
            if !clean {
                anyhow::bail!("audit found problems");
            }
        }
        Command::Sample { out } => {
            huiqi::gen::write_sample(&out).with_context(|| format!("writing {}", out.display()))?;
            println!("sample written to {}", out.display());
        }
        Command::Loadgen {
            applications,
            persons,
            data_dir,
            timeout_secs,
        } => {
            init_tracing("warn");
            let (dir, _keep) = temp_or(data_dir)?;
            let report = huiqi::commands::loadgen(
                applications,
                persons,
                &dir,
                Duration::from_secs(timeout_secs),
            )
            .await?;
            println!("{report}");
        }
    }
    Ok(())
}
