//! Errors of `sabot-kafka`.

use sabot_core::arrow::error::ArrowError;
use sabot_operators::OperatorError;

/// Result alias for `sabot-kafka`.
pub type Result<T, E = KafkaError> = std::result::Result<T, E>;

/// Errors raised by `sabot-kafka`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaError {
    /// A call to the Kafka client failed.
    #[error("kafka: {context}")]
    Client {
        /// What was being done (with the topic or broker).
        context: String,
        /// The client's error.
        #[source]
        source: ClientError,
    },

    /// A file of the connector's own (a staging file of the exactly-once sink) could
    /// not be written or read.
    #[error("kafka staging file {path}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A setting is invalid or does not fit the data (a schema, a column, a format).
    #[error("kafka configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },

    /// Bytes could not be decoded in a format, or a batch could not be encoded.
    #[error("{format} codec: {reason}")]
    Codec {
        /// The format (`json`, `avro`, ...).
        format: &'static str,
        /// What is wrong.
        reason: String,
    },

    /// A record that could not be decoded, under the `fail` policy.
    #[error("bad record in topic `{topic}` partition {partition} at offset {offset}: {reason}")]
    BadRecord {
        /// Its topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
        /// Why it could not be decoded.
        reason: String,
    },

    /// Records were sent but never acknowledged: the broker refused them or could not be
    /// reached within `message.timeout.ms` (after librdkafka's retries).
    #[error("kafka: {context}: {failed} record(s) not delivered, first: {first}")]
    Delivery {
        /// What was being done.
        context: String,
        /// How many records failed.
        failed: u64,
        /// The first failure: topic, partition and the broker's or client's error.
        first: String,
    },

    /// A record is larger than the producer may send.
    #[error(
        "kafka: a record of {bytes} bytes (key, value and headers) for topic `{topic}` is over \
         the producer's message.max.bytes of {limit}; raise it (and the topic's \
         max.message.bytes) or make records smaller"
    )]
    RecordTooLarge {
        /// Its topic.
        topic: String,
        /// Its key, value and header bytes.
        bytes: usize,
        /// The producer's `message.max.bytes`.
        limit: usize,
    },

    /// A newer producer with the same transactional id (a restored run) fenced this one:
    /// it is a zombie of an earlier run, and what it sent is not committed.
    #[error(
        "kafka: producer `{id}` was fenced while publishing checkpoint {checkpoint} (a newer run uses its transactional id): {reason}"
    )]
    Fenced {
        /// The transactional id.
        id: String,
        /// The checkpoint it was publishing.
        checkpoint: u64,
        /// The client's fatal error.
        reason: String,
    },

    /// No broker answered for longer than the source's broker timeout.
    #[error(
        "kafka: no broker of {bootstrap} answered for {secs:.1} s (broker timeout); last error: {last_error}"
    )]
    BrokerUnreachable {
        /// The bootstrap servers.
        bootstrap: String,
        /// How long they have been silent.
        secs: f64,
        /// The last error seen.
        last_error: String,
    },

    /// The schema registry could not be reached or answered with an error.
    #[error("schema registry {url}: {reason}")]
    Registry {
        /// The request's address.
        url: String,
        /// What went wrong.
        reason: String,
    },

    /// The test broker could not be installed or started.
    #[error("test broker: {reason}")]
    Broker {
        /// What went wrong.
        reason: String,
    },

    /// A checkpointed position could not be read.
    #[error("kafka source position: {reason}")]
    Position {
        /// What is wrong with it.
        reason: String,
    },

    /// An Arrow error.
    #[error(transparent)]
    Arrow(#[from] ArrowError),

    /// An error from `sabot-core`.
    #[error(transparent)]
    Core(#[from] sabot_core::CoreError),

    /// An operator error (state, checkpoints).
    #[error(transparent)]
    Operator(#[from] OperatorError),
}

impl KafkaError {
    pub(crate) fn client(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        KafkaError::Client {
            context: context.into(),
            source: ClientError(source),
        }
    }

    pub(crate) fn config(reason: impl Into<String>) -> Self {
        KafkaError::Config {
            reason: reason.into(),
        }
    }

    /// This error as an operator error of `operator` (what sources and sinks return).
    pub fn into_operator(self, operator: &str) -> OperatorError {
        match self {
            KafkaError::BadRecord {
                topic,
                partition,
                offset,
                reason,
            } => OperatorError::BadRecord {
                reason,
                position: format!("topic `{topic}` partition {partition} offset {offset}"),
            },
            KafkaError::Operator(e) => e,
            other => OperatorError::Connector {
                operator: operator.to_owned(),
                connector: "kafka",
                source: Box::new(other),
            },
        }
    }
}

/// An error of the Kafka client library (librdkafka, through `rdkafka`), kept opaque so
/// that no `rdkafka` type is part of this crate's interface.
#[derive(Debug)]
pub struct ClientError(rdkafka::error::KafkaError);

impl ClientError {
    /// The broker's or client's error code, by name (`UnknownTopicOrPartition`, ...), if
    /// the error carries one.
    pub fn code(&self) -> Option<String> {
        self.0.rdkafka_error_code().map(|c| format!("{c:?}"))
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}
