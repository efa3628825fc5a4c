//! Kafka sources, sinks and codecs for the Sabot stream processor.
//!
//! **Status:** this crate is reserved in the workspace; its contents arrive with issue 9
//! (an exactly-once `KafkaSource` and `KafkaSink` on `rdkafka`, codecs between Kafka
//! messages and Arrow batches, bad-record policies, and the Faust-style agent API).
//! It will implement the `Source` and `Sink` traits of [`sabot_operators`].
//!
//! ```
//! let _ = sabot_kafka::KafkaError::Unsupported { what: "Kafka topics" };
//! ```

// Linked so the layer rule (L3 over L2) is visible in the manifest from the start.
use sabot_operators as _;

/// Result alias for `sabot-kafka`.
pub type Result<T, E = KafkaError> = std::result::Result<T, E>;

/// Errors raised by `sabot-kafka`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaError {
    /// The operation is not available in this version.
    #[error("{what} are not supported by this version of sabot-kafka")]
    Unsupported {
        /// What was asked for.
        what: &'static str,
    },
    /// An error from `sabot-core`.
    #[error(transparent)]
    Core(#[from] sabot_core::CoreError),
}
