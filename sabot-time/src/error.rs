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
}
