//! The `HUIQI` stream and durable pull consumers, created or updated at start-up, idempotently:
//! every service calls [`ensure_stream`] and its own consumer's [`ensure_consumer`], so the
//! start order does not matter and a changed setting reaches the server on the next start.

use crate::consumer::ConsumerSpec;
use crate::BusError;
use async_nats::jetstream::{self, consumer::pull, stream};
use std::time::Duration;

/// The one stream that carries every captured subject (see `huiqi_events::subjects`).
pub const STREAM: &str = "HUIQI";

/// How long JetStream drops a repeated `Nats-Msg-Id`. The sled inboxes keep ids for ever; this
/// window only saves the work of re-processing a quick republish.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

pub fn stream_config() -> stream::Config {
    stream::Config {
        name: STREAM.to_string(),
        subjects: huiqi_events::subjects::STREAM_SUBJECTS
            .iter()
            .map(|s| s.to_string())
            .collect(),
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    }
}

/// Creates the stream, or brings an existing one to [`stream_config`].
pub async fn ensure_stream(js: &jetstream::Context) -> Result<(), BusError> {
    let config = stream_config();
    let err = |e: &dyn std::fmt::Display| BusError::Setup {
        what: format!("stream {STREAM}"),
        message: e.to_string(),
    };
    match js.get_stream(STREAM).await {
        Ok(mut s) => {
            let info = s.info().await.map_err(|e| err(&e))?;
            let current = &info.config;
            if current.subjects != config.subjects
                || current.duplicate_window != config.duplicate_window
            {
                js.update_stream(config).await.map_err(|e| err(&e))?;
            }
            Ok(())
        }
        Err(_) => match js.create_stream(config.clone()).await {
            Ok(_) => Ok(()),
            // Another service created it between our get and create.
            Err(_) if js.get_stream(STREAM).await.is_ok() => Ok(()),
            Err(e) => Err(err(&e)),
        },
    }
}

/// Creates or updates a durable pull consumer with explicit acks.
pub async fn ensure_consumer(
    js: &jetstream::Context,
    spec: &ConsumerSpec,
) -> Result<jetstream::consumer::Consumer<pull::Config>, BusError> {
    let stream = js.get_stream(STREAM).await.map_err(|e| BusError::Setup {
        what: format!("stream {STREAM}"),
        message: e.to_string(),
    })?;
    let config = pull::Config {
        durable_name: Some(spec.durable.clone()),
        description: Some(format!("huiqi {} consumer", spec.durable)),
        filter_subject: spec.filter.clone(),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        deliver_policy: jetstream::consumer::DeliverPolicy::All,
        ack_wait: spec.ack_wait,
        max_deliver: spec.max_deliver,
        max_ack_pending: spec.max_ack_pending,
        ..Default::default()
    };
    stream
        .create_consumer(config)
        .await
        .map_err(|e| BusError::Setup {
            what: format!("consumer {}", spec.durable),
            message: e.to_string(),
        })
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
    stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter.to_string(),
            ..Default::default()
        })
        .await
        .map_err(|e| err(&e))
}
