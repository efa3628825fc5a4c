//! State backends and keyed state for the Sabot stream processor.
//!
//! **Status:** this crate is reserved in the workspace; its contents arrive with issue 4
//! (a byte-level `StateBackend` trait with memory and RocksDB implementations, and typed
//! keyed state: `ValueState`, `ListState`, `MapState`, `ReducingState`,
//! `AggregatingState`). Until then, the window operator in `sabot-operators` keeps its
//! accumulators in operator-local hash tables.
//!
//! ```
//! let _ = sabot_state::StateError::Unsupported { what: "snapshots" };
//! ```

/// Result alias for `sabot-state`.
pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// Errors raised by `sabot-state`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The operation is not available in this version.
    #[error("{what} are not supported by this version of sabot-state")]
    Unsupported {
        /// What was asked for.
        what: &'static str,
    },
    /// An error from `sabot-core`.
    #[error(transparent)]
    Core(#[from] sabot_core::CoreError),
}
