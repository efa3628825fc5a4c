//! The facade's error: any component crate's error.

/// Any error a Sabot crate raises. Its `Display` is the component's own message; the
/// causes are in [`source`](std::error::Error::source) (print the whole chain with
/// [`ErrorChain`](crate::core::ErrorChain) or `anyhow`'s `{:#}`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Core types: schemas, keys, settings.
    #[error(transparent)]
    Core(#[from] sabot_core::CoreError),
    /// Event time and watermarks.
    #[error(transparent)]
    Time(#[from] sabot_time::TimeError),
    /// Keyed state.
    #[error(transparent)]
    State(#[from] sabot_state::StateError),
    /// Checkpoints and their storage.
    #[error(transparent)]
    Checkpoint(#[from] sabot_checkpoint::CheckpointError),
    /// Exchanges between subtasks, in process or over the network.
    #[error(transparent)]
    Shuffle(#[from] sabot_shuffle::ShuffleError),
    /// Operators, sources and sinks.
    #[error(transparent)]
    Operator(#[from] sabot_operators::OperatorError),
    /// Building or running a job.
    #[error(transparent)]
    Runtime(#[from] sabot_runtime::RuntimeError),
    /// Kafka sources, sinks, codecs and administration.
    #[cfg(feature = "kafka")]
    #[error(transparent)]
    Kafka(#[from] sabot_kafka::KafkaError),
    /// Cluster roles: the coordinator, a worker, an attempt's deployment.
    #[cfg(feature = "cluster")]
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}
