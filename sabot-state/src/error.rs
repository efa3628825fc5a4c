use std::path::PathBuf;

/// Result alias for `sabot-state`.
pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// Errors raised by `sabot-state`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Reading or writing a state file or folder failed (a full disk, a missing folder,
    /// a working folder that cannot be created, ...).
    #[error("state I/O failed at {path}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A snapshot file is damaged, truncated, or not a snapshot.
    #[error("corrupt state snapshot {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A state was written with one value layout and is now used with another.
    #[error(
        "state `{state}` was written as `{written}` but is now registered as `{registered}`: \
         its serializer no longer matches"
    )]
    SerializerMismatch {
        /// The state's name.
        state: String,
        /// The layout in the snapshot.
        written: String,
        /// The layout asked for now.
        registered: String,
    },

    /// A snapshot has another number of key groups than this backend.
    #[error("snapshot {path} has max parallelism {snapshot}, this backend {expected}")]
    MaxParallelismMismatch {
        /// The file.
        path: PathBuf,
        /// Key groups in the snapshot.
        snapshot: usize,
        /// Key groups of this backend.
        expected: usize,
    },

    /// A state id that this backend never handed out.
    #[error("unknown state id {0}")]
    UnknownState(u32),

    /// A key group outside the backend's range.
    #[error("key group {key_group} is outside this backend's range {start}..{end}")]
    KeyGroupOutOfRange {
        /// The key group asked for.
        key_group: u16,
        /// First key group owned.
        start: u16,
        /// One past the last key group owned.
        end: u16,
    },

    /// A value could not be encoded or decoded.
    #[error("state `{state}`: value codec failed")]
    Codec {
        /// The state's name.
        state: String,
        /// The codec's error.
        #[source]
        source: postcard::Error,
    },

    /// A stored value does not decode as its state's layout says.
    #[error("state `{state}` holds a malformed value: {reason}")]
    BadValue {
        /// The state's name.
        state: String,
        /// What is wrong.
        reason: String,
    },

    /// A write would make one entry (key, namespace and value) larger than a backend
    /// holds; nothing was written.
    #[error("an entry of {bytes} bytes exceeds the limit of {limit} bytes per entry")]
    EntryTooLarge {
        /// The entry's size with the write.
        bytes: usize,
        /// The most one entry may hold.
        limit: usize,
    },

    /// A restore was asked for without any snapshot.
    #[error("restore needs at least one snapshot folder")]
    NothingToRestore,

    /// An error from `sabot-core`.
    #[error(transparent)]
    Core(#[from] sabot_core::CoreError),
}
