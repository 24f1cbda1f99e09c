//! The `HUIQI` stream and the durable consumers.
//!
//! Who does what: an admin provisions ([`provision`], `huiqi setup`; `huiqi up` does it for its
//! private server): the stream with explicit [`StreamSettings`] and every durable consumer of
//! [`crate::topology`]. A service only binds to its own consumer ([`bind_consumer`]); on an open
//! bus (no permissions, as in tests) it creates what is missing itself, and under least
//! privilege it says which admin step is missing instead.

use crate::consumer::ConsumerSpec;
use crate::BusError;
use async_nats::jetstream::{self, consumer::pull, stream};
use std::time::Duration;

/// The one stream that carries every captured subject (see `huiqi_events::subjects`).
pub const STREAM: &str = "HUIQI";

/// Runs `attempt` again while it fails with an error `transient` accepts (a cluster electing a
/// leader, a node just lost, peers still joining), pausing `pause` between tries, for at most
/// `limit`; then returns the last result. One patience for every JetStream call that a
/// cluster can refuse for a while.
pub async fn patiently<T, E, F, Fut>(
    what: &str,
    limit: Duration,
    pause: Duration,
    mut attempt: F,
    transient: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let started = std::time::Instant::now();
    loop {
        match attempt().await {
            Err(e) if transient(&e) && started.elapsed() < limit => {
                tracing::warn!(what, error = %e, "JetStream cannot answer yet; trying again");
                tokio::time::sleep(pause).await;
            }
            result => return result,
        }
    }
}

/// The stream's retention and limits, all explicit (README, "Configuration").
///
/// Why these defaults: the stream is the second copy of every service log (a lost sled
/// directory is rebuilt from it), so it keeps everything (`max_age` 0, no size limit) and, if
/// an operator sets a limit, refuses new events when full (`discard: new`) rather than silently
/// dropping the oldest history. The duplicate window only saves re-processing a quick
/// republish: every inbox keeps event ids for ever.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct StreamSettings {
    /// Stream replicas (1 on a single server; 3 on a 3-node cluster).
    #[arg(
        long = "stream-replicas",
        env = "HUIQI_STREAM_REPLICAS",
        default_value_t = 1
    )]
    pub replicas: usize,
    /// Oldest message kept, in seconds; 0 keeps messages for ever.
    #[arg(
        long = "stream-max-age-secs",
        env = "HUIQI_STREAM_MAX_AGE_SECS",
        default_value_t = 0
    )]
    pub max_age_secs: u64,
    /// Most bytes the stream holds; -1 for no limit (new events are refused at the limit).
    #[arg(long = "stream-max-bytes", env = "HUIQI_STREAM_MAX_BYTES", default_value_t = -1, allow_hyphen_values = true)]
    pub max_bytes: i64,
    /// Most messages the stream holds; -1 for no limit (new events are refused at the limit).
    #[arg(long = "stream-max-messages", env = "HUIQI_STREAM_MAX_MESSAGES", default_value_t = -1, allow_hyphen_values = true)]
    pub max_messages: i64,
    /// Largest message, bytes (the server's max_payload must allow it).
    #[arg(long = "stream-max-message-size", env = "HUIQI_STREAM_MAX_MESSAGE_SIZE", default_value_t = 8 * 1024 * 1024)]
    pub max_message_size: i32,
    /// JetStream's duplicate window for `Nats-Msg-Id`, seconds.
    #[arg(
        long = "stream-duplicate-window-secs",
        env = "HUIQI_STREAM_DUPLICATE_WINDOW_SECS",
        default_value_t = 120
    )]
    pub duplicate_window_secs: u64,
    /// How many partitions the claim-processing services' work is split into (one durable
    /// consumer per partition and service; docs/SCALING.md). Fixed for a deployment's life.
    #[arg(long = "partitions", env = "HUIQI_PARTITIONS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=huiqi_events::partition::MAX_PARTITIONS as i64))]
    pub partitions: u16,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            replicas: 1,
            max_age_secs: 0,
            max_bytes: -1,
            max_messages: -1,
            max_message_size: 8 * 1024 * 1024,
            duplicate_window_secs: 120,
            partitions: 1,
        }
    }
}

impl StreamSettings {
    pub fn config(&self) -> stream::Config {
        stream::Config {
            name: STREAM.to_string(),
            subjects: huiqi_events::subjects::STREAM_SUBJECTS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            max_age: Duration::from_secs(self.max_age_secs),
            max_bytes: self.max_bytes,
            max_messages: self.max_messages,
            max_message_size: self.max_message_size,
            duplicate_window: Duration::from_secs(self.duplicate_window_secs),
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        }
    }
}

fn differs(current: &stream::Config, wanted: &stream::Config) -> bool {
    current.subjects != wanted.subjects
        || current.num_replicas != wanted.num_replicas
        || current.max_age != wanted.max_age
        || current.max_bytes != wanted.max_bytes
        || current.max_messages != wanted.max_messages
        || current.max_message_size != wanted.max_message_size
        || current.duplicate_window != wanted.duplicate_window
        || current.discard != wanted.discard
}

/// Creates the stream, or brings an existing one to `settings` (admin).
pub async fn ensure_stream(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<(), BusError> {
    let config = settings.config();
    let err = |e: &dyn std::fmt::Display| BusError::Setup {
        what: format!("stream {STREAM}"),
        message: e.to_string(),
    };
    match js.get_stream(STREAM).await {
        Ok(mut s) => {
            let info = s.info().await.map_err(|e| err(&e))?;
            if differs(&info.config, &config) {
                js.update_stream(config).await.map_err(|e| err(&e))?;
            }
            Ok(())
        }
        Err(_) => create_stream_patiently(js, config)
            .await
            .map_err(|e| err(&e)),
    }
}

/// Creates a stream (admin), waiting up to a minute while a cluster whose nodes are still
/// joining has a meta leader but too few peers for the replicas; fine when another process
/// created it meanwhile.
pub async fn create_stream_patiently(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<(), jetstream::context::CreateStreamError> {
    let created = patiently(
        "stream placement",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || js.create_stream(config.clone()),
        |e| {
            matches!(e.kind(), jetstream::context::CreateStreamErrorKind::JetStream(ref j)
                if j.error_code() == jetstream::ErrorCode::CLUSTER_NO_PEERS)
        },
    )
    .await;
    match created {
        Ok(_) => Ok(()),
        Err(_) if js.get_stream(&config.name).await.is_ok() => Ok(()),
        Err(e) => Err(e),
    }
}

/// The settings of a durable consumer of the topology.
pub fn pull_config(spec: &ConsumerSpec) -> pull::Config {
    pull::Config {
        durable_name: Some(spec.durable.clone()),
        description: Some(format!("huiqi {} consumer", spec.durable)),
        filter_subject: spec.filter.clone(),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        deliver_policy: jetstream::consumer::DeliverPolicy::All,
        ack_wait: spec.ack_wait,
        max_deliver: spec.max_deliver,
        max_ack_pending: spec.max_ack_pending,
        ..Default::default()
    }
}

/// Creates or updates a durable pull consumer with explicit acks (admin).
pub async fn ensure_consumer(
    js: &jetstream::Context,
    spec: &ConsumerSpec,
) -> Result<jetstream::consumer::Consumer<pull::Config>, BusError> {
    let stream = js.get_stream(STREAM).await.map_err(|e| BusError::Setup {
        what: format!("stream {STREAM}"),
        message: e.to_string(),
    })?;
    stream
        .create_consumer(pull_config(spec))
        .await
        .map_err(|e| BusError::Setup {
            what: format!("consumer {}", spec.durable),
            message: e.to_string(),
        })
}

/// Waits until JetStream answers (a cluster that just started elects its meta leader first;
/// until then every JetStream request fails), at most `limit`.
pub async fn wait_for_jetstream(js: &jetstream::Context, limit: Duration) -> Result<(), BusError> {
    // The raw account-info request (the typed one of async-nats does not parse what a
    // clustered 2.9 server answers), in short tries: until the meta leader exists a request
    // waits out its whole timeout.
    let info = || async {
        match tokio::time::timeout(Duration::from_secs(1), js.request("INFO", &())).await {
            Ok(Ok(jetstream::response::Response::<serde_json::Value>::Ok(_))) => Ok(()),
            Ok(Ok(jetstream::response::Response::Err { error })) => Err(error.to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within 1 s".to_string()),
        }
    };
    patiently("JetStream", limit, Duration::from_millis(250), info, |_| {
        true
    })
    .await
    .map_err(|e| BusError::Setup {
        what: "JetStream".into(),
        message: format!("not available after {limit:?}: {e}"),
    })
}

/// Everything an admin sets up: the stream, every durable consumer of the topology and the
/// lease bucket.
pub async fn provision(js: &jetstream::Context, settings: &StreamSettings) -> Result<(), BusError> {
    wait_for_jetstream(js, std::time::Duration::from_secs(60)).await?;
    ensure_stream(js, settings).await?;
    for spec in crate::topology::all_consumers(settings.partitions) {
        ensure_consumer(js, &spec).await?;
    }
    // Which instance of each service works: as many copies as the stream.
    crate::lease::ensure_bucket(js, settings.replicas).await?;
    // Split: the counts that cross partitions (crate::reserve), as many copies as the stream.
    if settings.partitions > 1 {
        crate::reserve::ensure_bucket(js, settings.replicas).await?;
    }
    Ok(())
}

/// The reply consumers of named portals (admin); each reads only its portal's answers.
pub async fn provision_portals(
    js: &jetstream::Context,
    portals: &[String],
) -> Result<(), BusError> {
    for p in portals {
        if !huiqi_events::subjects::valid_portal(p) {
            return Err(BusError::Setup {
                what: format!("portal {p:?}"),
                message: "a portal name is 1-32 of a-z, 0-9 and -".into(),
            });
        }
        ensure_consumer(js, &crate::topology::portal_consumer(p)).await?;
    }
    Ok(())
}

/// What a service says when something only the admin provisions is missing.
pub(crate) fn missing_needs_admin(what: String, e: &dyn std::fmt::Display) -> BusError {
    BusError::Setup {
        what,
        message: format!(
            "{e}; it is missing and this NATS user may not create it: run `huiqi setup` with the admin credentials first"
        ),
    }
}

/// A service's start-up: find the stream and its own durable consumer. When either is missing
/// it tries to create it (which succeeds only where the user may, e.g. on an open bus) and
/// otherwise names the admin step that is missing.
pub async fn bind_consumer(
    js: &jetstream::Context,
    spec: &ConsumerSpec,
) -> Result<jetstream::consumer::Consumer<pull::Config>, BusError> {
    // A NATS that is there but cannot answer yet (a cluster electing a leader, a node just
    // lost) is waited for; only an answer that says "not found" leads to creating. A service
    // never updates an existing stream (its settings are the admin's: a default here would
    // turn an R3 stream back into R1).
    const WAIT: Duration = Duration::from_secs(120);
    const PAUSE: Duration = Duration::from_millis(500);
    let stream_not_found = |e: &jetstream::context::GetStreamError| {
        matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref j)
            if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
    };
    let unavailable = |what: String, e: &dyn std::fmt::Display| BusError::Setup {
        what,
        message: format!("JetStream did not answer for {WAIT:?}: {e}"),
    };
    let looked_up = patiently(
        "stream",
        WAIT,
        PAUSE,
        || js.get_stream(STREAM),
        |e| !stream_not_found(e),
    )
    .await;
    let stream = match looked_up {
        Ok(s) => s,
        Err(e) if stream_not_found(&e) => {
            if let Err(e) = js.create_stream(StreamSettings::default().config()).await {
                // Someone else may have created it meanwhile; otherwise the admin must.
                if js.get_stream(STREAM).await.is_err() {
                    return Err(missing_needs_admin(format!("stream {STREAM}"), &e));
                }
            }
            js.get_stream(STREAM)
                .await
                .map_err(|e| unavailable(format!("stream {STREAM}"), &e))?
        }
        Err(e) => return Err(unavailable(format!("stream {STREAM}"), &e)),
    };
    let consumer_not_found = |e: &async_nats::Error| {
        e.downcast_ref::<jetstream::context::ConsumerInfoError>()
            .is_some_and(|e| {
                matches!(
                    e.kind(),
                    jetstream::context::ConsumerInfoErrorKind::NotFound
                )
            })
    };
    let looked_up = patiently(
        "consumer",
        WAIT,
        PAUSE,
        || stream.get_consumer::<pull::Config>(&spec.durable),
        |e| !consumer_not_found(e),
    )
    .await;
    match looked_up {
        Ok(c) => {
            let info = c.cached_info();
            if info.config.filter_subject != spec.filter
                || info.config.max_ack_pending != spec.max_ack_pending
                || info.config.ack_wait != spec.ack_wait
            {
                tracing::warn!(durable = %spec.durable, "consumer settings differ from this build; `huiqi setup` updates them");
            }
            Ok(c)
        }
        Err(e) if consumer_not_found(&e) => stream
            .create_consumer(pull_config(spec))
            .await
            .map_err(|e| missing_needs_admin(format!("consumer {}", spec.durable), &e)),
        Err(e) => Err(unavailable(format!("consumer {}", spec.durable), &e)),
    }
}

/// Every message on the stream matching `filter` now, from the first (an ordered reader that
/// stops at the count the stream held when it started). Each message must arrive within
/// `wait`, or the read fails naming how far it got.
pub async fn read_all(
    js: &jetstream::Context,
    filter: &str,
    wait: std::time::Duration,
) -> Result<Vec<jetstream::Message>, BusError> {
    use futures_util::StreamExt;
    let err = |e: &dyn std::fmt::Display| BusError::Consume {
        durable: format!("ordered reader of {filter}"),
        message: e.to_string(),
    };
    let consumer = ordered_reader(js, filter).await?;
    let pending = consumer
        .clone()
        .info()
        .await
        .map_err(|e| err(&e))?
        .num_pending as usize;
    let mut out = Vec::with_capacity(pending);
    if pending == 0 {
        return Ok(out);
    }
    let mut messages = consumer.messages().await.map_err(|e| err(&e))?;
    while out.len() < pending {
        match tokio::time::timeout(wait, messages.next()).await {
            Ok(Some(Ok(m))) => out.push(m),
            Ok(Some(Err(e))) => return Err(err(&e)),
            Ok(None) => return Err(err(&"the stream ended")),
            Err(_) => {
                return Err(err(&format!(
                    "no message for {wait:?} after {} of {pending}",
                    out.len()
                )))
            }
        }
    }
    Ok(out)
}

/// An ordered consumer reading `filter` on the `HUIQI` stream from its first message: for
/// operators and measurements that must see every event (flow-controlled, unlike a core
/// subscription), including those published before they started.
pub async fn ordered_reader(
    js: &jetstream::Context,
    filter: &str,
) -> Result<jetstream::consumer::Consumer<pull::OrderedConfig>, BusError> {
    let err = |e: &dyn std::fmt::Display| BusError::Setup {
        what: format!("ordered reader of {filter}"),
        message: e.to_string(),
    };
    let stream = js.get_stream(STREAM).await.map_err(|e| err(&e))?;
    // On a cluster with a node down, nats-server 2.9 may place the reader (a one-replica
    // consumer) on the dead node, and the creation times out (10 s a try); each new try is
    // placed anew.
    patiently(
        "ordered reader",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            stream.create_consumer(pull::OrderedConfig {
                filter_subject: filter.to_string(),
                ..Default::default()
            })
        },
        |_| true,
    )
    .await
    .map_err(|e| err(&e))
}
