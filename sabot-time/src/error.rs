/// Result alias for `sabot-time`.
pub type Result<T, E = TimeError> = std::result::Result<T, E>;

/// Errors raised by `sabot-time`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TimeError {
    /// A message named an input the tracker does not have.
    #[error("input {input} out of range: the tracker has {inputs} inputs")]
    UnknownInput {
        /// The input index received.
        input: usize,
        /// How many inputs the tracker tracks.
        inputs: usize,
    },
    /// An input sent something after its end of stream.
    #[error("input {input} sent {what} after its end of stream")]
    AfterEndOfStream {
        /// The input index.
        input: usize,
        /// What it sent.
        what: &'static str,
    },
    /// Bytes of a timer snapshot that do not decode.
    #[error("corrupt timer snapshot")]
    Codec(#[from] sabot_core::codec::CodecError),
    /// A timer snapshot could not be decoded.
    #[error("corrupt timer snapshot: {reason}")]
    Corrupt {
        /// What is wrong with it.
        reason: String,
    },
    /// A timer snapshot was taken with another number of key groups.
    #[error(
        "timer snapshot has max parallelism {snapshot}, this job {expected}: key groups cannot be mapped"
    )]
    MaxParallelismMismatch {
        /// Key groups in the snapshot.
        snapshot: usize,
        /// Key groups of the restoring job.
        expected: usize,
    },
}
