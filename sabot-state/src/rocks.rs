//! The RocksDB state backend: one column family per state, key groups as contiguous key
//! ranges, RocksDB checkpoints (hard-linked SST files) as snapshots.

use std::fs;
use std::path::{Path, PathBuf};

use rocksdb::checkpoint::Checkpoint;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, DBCompressionType, MergeOperands,
    Options, ReadOptions, WriteOptions,
};
use sabot_core::{KeyGroup, KeyGroupRange};

use crate::backend::{
    EntryKey, GroupScanFn, ScanFn, SnapshotInfo, StateBackend, StateId, split_composite,
    with_composite,
};
use crate::snapshot::{self, TableMeta};
use crate::{Result, StateError};

/// The folder of a snapshot that holds the RocksDB checkpoint.
pub const ROCKSDB_CHECKPOINT_DIR: &str = "rocksdb";
/// The file of a RocksDB snapshot that names its states (the snapshot format with no
/// key-group sections).
pub const ROCKSDB_META_FILE: &str = "rocksdb-meta";

/// Compression of SST files.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// None: fastest, largest.
    None,
    /// LZ4: fast, the default.
    Lz4,
    /// Zstandard: smaller, slower.
    Zstd,
}

/// Settings of the [`RocksDbBackend`], sized for streaming state: large memtables (few
/// small flushes), a shared block cache, LZ4 on SST files.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RocksDbConfig {
    /// Memtable size per column family, bytes.
    pub write_buffer_size: usize,
    /// Block cache shared by every column family, bytes.
    pub block_cache_size: usize,
    /// SST compression.
    pub compression: Compression,
    /// Background flush and compaction threads.
    pub background_jobs: i32,
    /// Whether writes go to RocksDB's write-ahead log. Off by default: durability comes
    /// from Sabot's checkpoints, and recovery restores the last one.
    pub use_wal: bool,
    /// Snapshots whose files add up to at least this many bytes are restored by linking
    /// their SST files into the database and reopening it (no data is read: the cost
    /// does not grow with the state); smaller ones are copied entry by entry, which is
    /// cheaper than reopening a database. Default 16 MiB; 0 links always.
    pub link_restore_bytes: u64,
}

impl RocksDbConfig {
    /// Sets [`RocksDbConfig::link_restore_bytes`].
    pub fn with_link_restore_bytes(mut self, bytes: u64) -> Self {
        self.link_restore_bytes = bytes;
        self
    }
}

impl Default for RocksDbConfig {
    fn default() -> Self {
        RocksDbConfig {
            write_buffer_size: 64 << 20,
            block_cache_size: 256 << 20,
            compression: Compression::Lz4,
            background_jobs: 2,
            use_wal: false,
            link_restore_bytes: 16 << 20,
        }
    }
}

/// List state appends: the merge result is the existing value followed by the operands.
fn concat_merge(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let mut out = existing.map(<[u8]>::to_vec).unwrap_or_default();
    for op in operands.iter() {
        out.extend_from_slice(op);
    }
    Some(out)
}

/// State in RocksDB: a column family per state; entry keys are the key group (u16
/// big-endian, so a key group is one contiguous range) then the composite key.
pub struct RocksDbBackend {
    /// `None` only if reopening the database after a failed restore failed too.
    db: Option<DB>,
    path: PathBuf,
    config: RocksDbConfig,
    cf_options: Options,
    max_parallelism: usize,
    range: KeyGroupRange,
    tables: Vec<TableMeta>,
    write: WriteOptions,
    scratch: Vec<u8>,
    /// A working folder owned by this backend, removed after the database closes
    /// (declared last: fields drop in order).
    _temporary: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for RocksDbBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDbBackend")
            .field("path", &self.path)
            .field("config", &self.config)
            .field("range", &self.range)
            .field("states", &self.tables.len())
            .finish_non_exhaustive()
    }
}

fn cf_name(i: usize) -> String {
    format!("state-{i}")
}

/// [`cf_name`] without allocating (it runs on every read and write).
fn cf_name_in(buf: &mut [u8; 24], i: usize) -> &str {
    use std::io::Write;
    let mut w = &mut buf[..];
    // 6 + 20 digits fit in 24 bytes only up to 18 digits; state ids are u32 (10 digits).
    let _ = write!(w, "state-{i}");
    let n = 24 - w.len();
    std::str::from_utf8(&buf[..n]).unwrap_or("state-?")
}

/// The bytes of the files in `dir`.
fn folder_bytes(dir: &Path) -> Result<u64> {
    let io = |source| StateError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut n = 0;
    for e in fs::read_dir(dir).map_err(io)? {
        n += e.map_err(io)?.metadata().map_err(io)?.len();
    }
    Ok(n)
}

/// A RocksDB error at `path`, kept as the error object (an I/O error whose inner error
/// is RocksDB's), not as its text.
fn db_err(path: &Path) -> impl FnOnce(rocksdb::Error) -> StateError + '_ {
    move |e| StateError::Io {
        path: path.to_owned(),
        source: std::io::Error::other(e),
    }
}

impl RocksDbBackend {
    /// Calls `f` with the value of (`key`, `namespace`), if any, while RocksDB's pinned
    /// slice lives (no copy); returns whether there is one.
    fn read(
        &self,
        state: StateId,
        kg: KeyGroup,
        key: &[u8],
        namespace: &[u8],
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<bool> {
        self.check(state, kg)?;
        let cf = self.cf(state)?;
        let db = self.db()?;
        with_composite(&kg.0.to_be_bytes(), key, namespace, |k| {
            let v = db.get_pinned_cf(cf, k)?;
            if let Some(v) = &v {
                f(v);
            }
            Ok(v.is_some())
        })
        .map_err(db_err(&self.path))
    }

    /// Opens a fresh database in folder `path` (emptied first: state comes from restores,
    /// never from a previous run's leftovers).
    pub fn open(
        path: &Path,
        config: RocksDbConfig,
        max_parallelism: usize,
        range: KeyGroupRange,
    ) -> Result<Self> {
        if path.exists() {
            fs::remove_dir_all(path).map_err(|source| StateError::Io {
                path: path.to_owned(),
                source,
            })?;
        }
        let cf_options = Self::cf_options(&config).map_err(db_err(path))?;
        let db = Self::open_db(path, &config, &cf_options, 0)?;
        let mut write = WriteOptions::default();
        write.disable_wal(!config.use_wal);
        Ok(RocksDbBackend {
            db: Some(db),
            path: path.to_owned(),
            config,
            cf_options,
            max_parallelism,
            range,
            tables: Vec::new(),
            write,
            scratch: Vec::new(),
            _temporary: None,
        })
    }

    /// Opens a fresh database in a new folder under `parent` (created if missing), named
    /// `prefix` plus a random suffix, and removed when the backend is dropped: the
    /// working copy of a job's state, whose durable form is its snapshots.
    pub fn open_temporary(
        parent: &Path,
        prefix: &str,
        config: RocksDbConfig,
        max_parallelism: usize,
        range: KeyGroupRange,
    ) -> Result<Self> {
        let io = |source| StateError::Io {
            path: parent.to_owned(),
            source,
        };
        fs::create_dir_all(parent).map_err(io)?;
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(parent)
            .map_err(io)?;
        let mut b = Self::open(&dir.path().join("db"), config, max_parallelism, range)?;
        b._temporary = Some(dir);
        Ok(b)
    }

    /// Opens (or creates) the database in `path` with column families for `states`
    /// states.
    fn open_db(
        path: &Path,
        config: &RocksDbConfig,
        cf_options: &Options,
        states: usize,
    ) -> Result<DB> {
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.increase_parallelism(config.background_jobs.max(1));
        let cfs = (0..states).map(|i| ColumnFamilyDescriptor::new(cf_name(i), cf_options.clone()));
        DB::open_cf_descriptors(&db_opts, path, cfs).map_err(db_err(path))
    }

    /// The open database.
    fn db(&self) -> Result<&DB> {
        self.db.as_ref().ok_or_else(|| StateError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(
                "the database could not be reopened after a failed restore",
            ),
        })
    }

    /// Replaces the database with the RocksDB checkpoint in `checkpoint` (holding
    /// `states` column families): its SST files are hard-linked into the working folder
    /// (copied across file systems), the small metadata files copied, and the database
    /// reopened on them; nothing is read through. Key groups outside this backend's range
    /// are then dropped with range deletions.
    fn reopen_from(&mut self, checkpoint: &Path, states: usize) -> Result<()> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| StateError::Io { path, source }
        };
        // Closed before its files go.
        self.db = None;
        let result = (|| {
            fs::remove_dir_all(&self.path).map_err(io(&self.path))?;
            fs::create_dir_all(&self.path).map_err(io(&self.path))?;
            for e in fs::read_dir(checkpoint).map_err(io(checkpoint))? {
                let from = e.map_err(io(checkpoint))?.path();
                let Some(name) = from.file_name() else {
                    continue;
                };
                let to = self.path.join(name);
                let immutable = from.extension().is_some_and(|x| x == "sst" || x == "blob");
                // SST files never change: a link shares them with the checkpoint. The
                // manifest, CURRENT and OPTIONS are rewritten by RocksDB: copies.
                if !(immutable && fs::hard_link(&from, &to).is_ok()) {
                    fs::copy(&from, &to).map_err(io(&from))?;
                }
            }
            let db = Self::open_db(&self.path, &self.config, &self.cf_options, states)?;
            for i in 0..states {
                let cf = db
                    .cf_handle(&cf_name(i))
                    .ok_or_else(|| StateError::Corrupt {
                        path: checkpoint.to_owned(),
                        reason: format!("column family {} is missing", cf_name(i)),
                    })?;
                let (start, end) = (self.range.start.to_be_bytes(), self.range.end.to_be_bytes());
                if self.range.start > 0 {
                    db.delete_range_cf(cf, [0u8, 0].as_slice(), start.as_slice())
                        .map_err(db_err(&self.path))?;
                }
                db.delete_range_cf(cf, end.as_slice(), [0xffu8; 8].as_slice())
                    .map_err(db_err(&self.path))?;
            }
            Ok(db)
        })();
        match result {
            Ok(db) => {
                self.db = Some(db);
                Ok(())
            }
            Err(e) => {
                // Leave an empty, usable database behind: the restore failed as a whole.
                let _ = fs::remove_dir_all(&self.path);
                self.db = Self::open_db(
                    &self.path,
                    &self.config,
                    &self.cf_options,
                    self.tables.len(),
                )
                .ok();
                Err(e)
            }
        }
    }

    fn cf_options(config: &RocksDbConfig) -> Result<Options, rocksdb::Error> {
        let mut o = Options::default();
        o.set_write_buffer_size(config.write_buffer_size);
        o.set_compression_type(match config.compression {
            Compression::None => DBCompressionType::None,
            Compression::Lz4 => DBCompressionType::Lz4,
            Compression::Zstd => DBCompressionType::Zstd,
        });
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&Cache::new_lru_cache(config.block_cache_size)?);
        table.set_bloom_filter(10.0, false);
        o.set_block_based_table_factory(&table);
        o.set_merge_operator_associative("sabot-concat", concat_merge);
        Ok(o)
    }

    /// A RocksDB integer property of `state`'s column family (for metrics and tests),
    /// e.g. `rocksdb.estimate-num-keys` or `rocksdb.num-running-compactions`.
    pub fn property(&self, state: StateId, name: &str) -> Result<Option<u64>> {
        self.db()?
            .property_int_value_cf(self.cf(state)?, name)
            .map_err(db_err(&self.path))
    }

    /// The settings it was opened with.
    pub fn config(&self) -> &RocksDbConfig {
        &self.config
    }

    fn check(&self, state: StateId, kg: KeyGroup) -> Result<()> {
        if state.0 as usize >= self.tables.len() {
            return Err(StateError::UnknownState(state.0));
        }
        if !self.range.contains(kg) {
            return Err(StateError::KeyGroupOutOfRange {
                key_group: kg.0,
                start: self.range.start,
                end: self.range.end,
            });
        }
        Ok(())
    }

    fn entry_key(buf: &mut Vec<u8>, kg: KeyGroup, key: &[u8], ns: &[u8]) {
        buf.clear();
        buf.extend_from_slice(&kg.0.to_be_bytes());
        buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
        buf.extend_from_slice(key);
        buf.extend_from_slice(ns);
    }

    /// Runs a write on the entry's full key, built in the reusable scratch buffer.
    fn with_entry<T>(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        key: &[u8],
        namespace: &[u8],
        f: impl FnOnce(&DB, &rocksdb::ColumnFamily, &[u8], &WriteOptions) -> Result<T, rocksdb::Error>,
    ) -> Result<T> {
        self.check(state, kg)?;
        let mut k = std::mem::take(&mut self.scratch);
        Self::entry_key(&mut k, kg, key, namespace);
        let r = self
            .cf(state)
            .and_then(|cf| f(self.db()?, cf, &k, &self.write).map_err(db_err(&self.path)));
        self.scratch = k;
        r
    }

    fn cf(&self, state: StateId) -> Result<&rocksdb::ColumnFamily> {
        let mut buf = [0u8; 24];
        self.db()?
            .cf_handle(cf_name_in(&mut buf, state.0 as usize))
            .ok_or_else(|| StateError::UnknownState(state.0))
    }

    /// Visits entries whose key starts with `prefix`, in key order.
    fn scan_raw(
        &self,
        state: StateId,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let cf = self.cf(state)?;
        let mut it = self.db()?.raw_iterator_cf_opt(cf, ReadOptions::default());
        it.seek(prefix);
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if !k.starts_with(prefix) || !f(k, v) {
                break;
            }
            it.next();
        }
        it.status().map_err(db_err(&self.path))
    }
}

impl StateBackend for RocksDbBackend {
    fn key_groups(&self) -> KeyGroupRange {
        self.range
    }

    fn register(&mut self, name: &str, fingerprint: &str) -> Result<StateId> {
        if let Some(i) = snapshot::find_table(self.tables.iter(), name, fingerprint)? {
            return Ok(StateId(i as u32));
        }
        let i = self.tables.len();
        self.db
            .as_mut()
            .ok_or_else(|| StateError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(
                    "the database could not be reopened after a failed restore",
                ),
            })?
            .create_cf(cf_name(i), &self.cf_options)
            .map_err(db_err(&self.path))?;
        self.tables.push(TableMeta {
            name: name.to_owned(),
            fingerprint: fingerprint.to_owned(),
        });
        Ok(StateId(i as u32))
    }

    fn get(
        &self,
        state: StateId,
        kg: KeyGroup,
        key: &[u8],
        namespace: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<bool> {
        out.clear();
        self.read(state, kg, key, namespace, &mut |v| out.extend_from_slice(v))
    }

    fn read_entry(
        &self,
        state: StateId,
        kg: KeyGroup,
        entry: &EntryKey,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<bool> {
        self.read(state, kg, entry.key(), entry.namespace(), f)
    }

    fn put(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        key: &[u8],
        namespace: &[u8],
        value: &[u8],
    ) -> Result<()> {
        self.with_entry(state, kg, key, namespace, |db, cf, k, w| {
            db.put_cf_opt(cf, k, value, w)
        })
    }

    fn delete(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        key: &[u8],
        namespace: &[u8],
    ) -> Result<bool> {
        self.with_entry(state, kg, key, namespace, |db, cf, k, w| {
            let existed = db.get_pinned_cf(cf, k)?.is_some();
            if existed {
                db.delete_cf_opt(cf, k, w)?;
            }
            Ok(existed)
        })
    }

    fn merge(
        &mut self,
        state: StateId,
        kg: KeyGroup,
        key: &[u8],
        namespace: &[u8],
        operand: &[u8],
    ) -> Result<()> {
        self.with_entry(state, kg, key, namespace, |db, cf, k, w| {
            db.merge_cf_opt(cf, k, operand, w)
        })
    }

    fn prefers_merge(&self) -> bool {
        true
    }

    fn scan(
        &self,
        state: StateId,
        kg: KeyGroup,
        key: &[u8],
        prefix: &[u8],
        f: &mut ScanFn<'_>,
    ) -> Result<()> {
        self.check(state, kg)?;
        let mut p = Vec::new();
        Self::entry_key(&mut p, kg, key, prefix);
        let skip = 2 + 4 + key.len();
        self.scan_raw(state, &p, &mut |k, v| f(&k[skip..], v))
    }

    fn scan_key_group(&self, state: StateId, kg: KeyGroup, f: &mut GroupScanFn<'_>) -> Result<()> {
        self.check(state, kg)?;
        self.scan_raw(
            state,
            &kg.0.to_be_bytes(),
            &mut |k, v| match split_composite(&k[2..]) {
                Some((key, ns)) => f(key, ns, v),
                None => true,
            },
        )
    }

    fn snapshot(&mut self, dir: &Path, range: KeyGroupRange) -> Result<SnapshotInfo> {
        fs::create_dir_all(dir).map_err(|source| StateError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let target = dir.join(ROCKSDB_CHECKPOINT_DIR);
        if target.exists() {
            fs::remove_dir_all(&target).map_err(|source| StateError::Io {
                path: target.clone(),
                source,
            })?;
        }
        // Without a WAL, unflushed memtables would be missing from the checkpoint.
        for i in 0..self.tables.len() {
            let cf = self.cf(StateId(i as u32))?;
            self.db()?.flush_cf(cf).map_err(db_err(&self.path))?;
        }
        Checkpoint::new(self.db()?)
            .and_then(|c| c.create_checkpoint(&target))
            .map_err(db_err(&target))?;
        // The state layout, written last: a snapshot folder without it is not a snapshot.
        let meta_dir = dir.join(ROCKSDB_META_FILE);
        let (meta, meta_bytes, _) =
            snapshot::write(&meta_dir, self.max_parallelism, &self.tables, &[])?;
        let mut files = vec![meta];
        let mut bytes = meta_bytes;
        for e in fs::read_dir(&target).map_err(|source| StateError::Io {
            path: target.clone(),
            source,
        })? {
            let e = e.map_err(|source| StateError::Io {
                path: target.clone(),
                source,
            })?;
            bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            files.push(e.path());
        }
        let _ = range; // the checkpoint holds every key group; restore filters by range
        Ok(SnapshotInfo {
            files,
            bytes,
            entries: None,
        })
    }

    fn restore(&mut self, dirs: &[PathBuf]) -> Result<()> {
        if dirs.is_empty() {
            return Err(StateError::NothingToRestore);
        }
        // Check every snapshot before changing anything.
        let mut metas = Vec::new();
        for dir in dirs {
            let meta = snapshot::read(&dir.join(ROCKSDB_META_FILE))?;
            if meta.max_parallelism != self.max_parallelism {
                return Err(StateError::MaxParallelismMismatch {
                    path: dir.to_owned(),
                    snapshot: meta.max_parallelism,
                    expected: self.max_parallelism,
                });
            }
            snapshot::check_layouts(self.tables.iter(), &meta.tables)?;
            metas.push(meta);
        }
        // The first snapshot becomes the database itself (its files linked, not read)
        // when the states registered so far are its first ones, in its order, so the
        // ids handed out stay valid.
        let mut rest = dirs.iter().zip(metas).peekable();
        if let Some((dir, meta)) = rest.peek()
            && folder_bytes(&dir.join(ROCKSDB_CHECKPOINT_DIR))? >= self.config.link_restore_bytes
            && meta.tables.len() >= self.tables.len()
            && meta.tables[..self.tables.len()] == self.tables[..]
        {
            let states = meta.tables.len();
            self.reopen_from(&dir.join(ROCKSDB_CHECKPOINT_DIR), states)?;
            self.tables = meta.tables.clone();
            rest.next();
        }
        for (dir, meta) in rest {
            self.copy_from(dir, &meta.tables)?;
        }
        Ok(())
    }
}

impl RocksDbBackend {
    /// Copies this backend's key groups out of the snapshot in `dir` (another subtask's,
    /// after a rescale), in write batches of bounded size.
    fn copy_from(&mut self, dir: &Path, tables: &[TableMeta]) -> Result<()> {
        const BATCH_BYTES: usize = 32 << 20;
        let checkpoint = dir.join(ROCKSDB_CHECKPOINT_DIR);
        // Merge operands in the checkpoint need the merge operator to be read.
        let cfs = (0..tables.len())
            .map(|i| ColumnFamilyDescriptor::new(cf_name(i), self.cf_options.clone()));
        let src_db =
            DB::open_cf_descriptors_read_only(&Options::default(), &checkpoint, cfs, false)
                .map_err(db_err(&checkpoint))?;
        for (i, t) in tables.iter().enumerate() {
            let id = self.register(&t.name, &t.fingerprint)?;
            let src = src_db
                .cf_handle(&cf_name(i))
                .ok_or_else(|| StateError::Corrupt {
                    path: checkpoint.clone(),
                    reason: format!("column family for state `{}` is missing", t.name),
                })?;
            let dst = self.cf(id)?;
            let db = self.db()?;
            let mut batch = rocksdb::WriteBatch::default();
            let mut it = src_db.raw_iterator_cf(src);
            it.seek(self.range.start.to_be_bytes());
            while it.valid() {
                let (Some(k), Some(v)) = (it.key(), it.value()) else {
                    break;
                };
                let kg = u16::from_be_bytes([k[0], *k.get(1).unwrap_or(&0)]);
                if kg >= self.range.end {
                    break;
                }
                batch.put_cf(dst, k, v);
                if batch.size_in_bytes() >= BATCH_BYTES {
                    db.write_opt(std::mem::take(&mut batch), &self.write)
                        .map_err(db_err(&self.path))?;
                }
                it.next();
            }
            it.status().map_err(db_err(&checkpoint))?;
            db.write_opt(batch, &self.write)
                .map_err(db_err(&self.path))?;
        }
        Ok(())
    }
}
