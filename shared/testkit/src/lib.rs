//! Test helpers (dev-only): a throwaway `nats-server -js` per test with its own temp store,
//! killed on drop, so no test depends on a server already running on the machine.

pub use huiqi_bus::NatsServer;

/// A private nats-server and the temp dir holding its store; both go away on drop.
pub struct TestNats {
    pub server: NatsServer,
    _dir: tempfile::TempDir,
}

impl TestNats {
    pub fn url(&self) -> &str {
        self.server.url()
    }
}

/// Starts a throwaway nats-server with JetStream on a random port.
pub fn nats() -> TestNats {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = NatsServer::start(dir.path(), None)
        .expect("start nats-server (apt-get install -y nats-server)");
    TestNats { server, _dir: dir }
}

/// Wraps application data in the portal's CloudEvent.
pub fn submitted(app: &impl serde::Serialize, application_id: &str) -> huiqi_events::Envelope {
    huiqi_events::Envelope::new(
        "test-portal",
        huiqi_events::types::APPLICATION_SUBMITTED,
        application_id,
        app,
    )
    .expect("serializes")
}
