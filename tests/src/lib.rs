//! Harness for the end-to-end tests: the whole pipeline in-process (exactly what `huiqi up`
//! starts) against a real nats-server, observed the way bureaus observe it.

use async_nats::jetstream;
use huiqi::gen::Fixtures;
use huiqi::watch::Watcher;
use huiqi::{Pipeline, UpSettings};
use huiqi_events::Envelope;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every message on the `HUIQI` stream whose subject matches `filter`, read from the start
/// (so it also sees what was published before a restart).
pub async fn read_stream(js: &jetstream::Context, filter: &str) -> Vec<jetstream::Message> {
    huiqi_bus::setup::read_all(js, filter, Duration::from_secs(20))
        .await
        .expect("stream read")
}

/// The events of [`read_stream`], with their subjects.
pub async fn stream_events(js: &jetstream::Context, filter: &str) -> Vec<(String, Envelope)> {
    read_stream(js, filter)
        .await
        .into_iter()
        .map(|m| {
            let e = Envelope::decode(&m.payload).expect("event");
            (m.subject.to_string(), e)
        })
        .collect()
}

/// A data dir, a fixture folder and settings pointing at a given NATS.
pub struct Rig {
    pub dir: tempfile::TempDir,
    pub settings: UpSettings,
}

impl Rig {
    pub fn new(nats_url: Option<&str>, fx: &Fixtures) -> Rig {
        let dir = tempfile::tempdir().expect("temp dir");
        let fixtures = dir.path().join("fixtures");
        fx.write(&fixtures).expect("write fixtures");
        let mut settings = UpSettings::new(&dir.path().join("data"), Some(&fixtures));
        settings.nats = nats_url.map(huiqi_bus::NatsOptions::new);
        settings.request_timeout = Duration::from_millis(500);
        Rig { dir, settings }
    }

    pub fn data_dir(&self) -> &Path {
        &self.settings.data_dir
    }

    pub fn ledger(&self) -> PathBuf {
        self.settings.ledger_path()
    }

    pub async fn start(&self) -> Pipeline {
        Pipeline::start(&self.settings)
            .await
            .expect("pipeline starts")
    }
}

/// A client on an open bus, its JetStream context and a watcher started before anything is
/// submitted.
pub async fn observe(url: &str) -> (async_nats::Client, jetstream::Context, Watcher) {
    observe_with(&huiqi_bus::NatsOptions::new(url)).await
}

/// The same with a login (the admin's, on a pipeline's private server).
pub async fn observe_with(
    options: &huiqi_bus::NatsOptions,
) -> (async_nats::Client, jetstream::Context, Watcher) {
    let client = options.connect("e2e").await.expect("connect");
    let js = jetstream::new(client.clone());
    let watcher = Watcher::start(&client, true).await.expect("watcher");
    (client, js, watcher)
}
pub mod procs;
