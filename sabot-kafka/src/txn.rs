//! Exactly-once publication to Kafka, tied to Sabot's checkpoints.
//!
//! librdkafka cannot resume a transaction another producer opened, so a transaction
//! left open by a crash can only be aborted, never committed. Sabot therefore stages
//! records in a write-ahead file per checkpoint and publishes a checkpoint's records in
//! one Kafka transaction once the checkpoint completed:
//!
//! 1. Between barriers, records are appended to a staging file
//!    ([`sabot_operators::StagedFiles`], prefix `<id>`).
//! 2. Pre-commit, on barrier `K`: the file is fsynced and becomes checkpoint `K`'s.
//! 3. Commit, when checkpoint `K` completes: one transaction (transactional id `<id>`,
//!    stable per subtask) holds the records of every pending file `<= K` plus a marker
//!    record `<id> -> K` in the marker topic; then the files are deleted.
//! 4. On restore from `R`: `init_transactions` fences older producers of the id and
//!    aborts what they left open; pending files `<= R` are published unless the marker
//!    topic shows a committed marker `>= K` for them (the crash came after the commit),
//!    and every other staged file is deleted (its records are produced again from `R`).
//!
//! So every record of a completed checkpoint is committed exactly once, and a
//! read-committed consumer sees each exactly once, whenever crashes come (on a broker
//! that isolates aborted transactions).
//!
//! Without checkpoints, records are produced directly by an idempotent producer
//! (at least once) and flushed at the end.
//!
//! Staging file format, in the layout of [`sabot_core::codec::Codec`] (integers little
//! endian; strings and byte strings a `u32` length then the bytes; options a tag byte
//! 0/1 then the value): a sequence of entries, each a tag byte and then either (tag 0) a
//! topic name, which gets the next topic index, or (tag 1) a record: topic index
//! (`u32`), partition (`Option<i32>`; none: by the key's hash), key and value
//! (`Option<bytes>`), header count (`u32`) and the headers (string, bytes).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::Producer;
use sabot_core::CheckpointId;
use sabot_core::codec::{Codec, CodecError, put_bytes};
use sabot_operators::StagedFiles;

use crate::admin::{KafkaProducer, OutRecord, check_size, max_message_bytes, producer, send};
use crate::{KafkaError, Result};

/// The topic holding commit markers (one partition, keyed by transactional id).
pub const MARKER_TOPIC: &str = "sabot-transaction-markers";

const TXN_TIMEOUT: Duration = Duration::from_secs(30);

const TOPIC_ENTRY: u8 = 0;
const RECORD_ENTRY: u8 = 1;

/// A record read back from a staging file; its topic is an index into the file's topics.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredRecord {
    topic: u32,
    partition: Option<i32>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
}

/// A producer that publishes records exactly once per completed checkpoint, or at
/// least once without checkpoints. See the module docs.
pub(crate) struct TxnLog {
    bootstrap: String,
    id: String,
    producer: KafkaProducer,
    /// The producer's `message.max.bytes`: larger records are refused when appended.
    max_bytes: usize,
    /// The staging files, in a checkpointed job.
    files: Option<StagedFiles>,
    /// The current staging file's topics (name -> index).
    topic_index: HashMap<String, u32>,
    /// One record's encoding, reused.
    scratch: Vec<u8>,
}

impl std::fmt::Debug for TxnLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnLog").field("id", &self.id).finish()
    }
}

impl TxnLog {
    /// A log with transactional id `id`, staging under `dir` when the job checkpoints.
    pub(crate) fn open(
        bootstrap: &str,
        id: &str,
        dir: Option<PathBuf>,
        extra: &[(String, String)],
    ) -> Result<TxnLog> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "60000")
            .set("linger.ms", "5");
        if dir.is_some() {
            cfg.set("transactional.id", id)
                .set("transaction.timeout.ms", "60000");
        }
        for (k, v) in extra {
            cfg.set(k, v);
        }
        let producer = producer(&cfg, bootstrap)?;
        let max_bytes = max_message_bytes(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        let files = match dir {
            Some(d) => {
                let files = StagedFiles::new(d, id)?;
                ensure_marker_topic(bootstrap)?;
                // Fences earlier producers of this id and aborts what they left open.
                producer
                    .init_transactions(TXN_TIMEOUT)
                    .map_err(|e| KafkaError::client(format!("init transactions of `{id}`"), e))?;
                Some(files)
            }
            None => None,
        };
        Ok(TxnLog {
            bootstrap: bootstrap.to_owned(),
            id: id.to_owned(),
            producer,
            max_bytes,
            files,
            topic_index: HashMap::new(),
            scratch: Vec::new(),
        })
    }

    /// Adds a record: staged (checkpointed job) or produced now.
    pub(crate) fn append(&mut self, r: &OutRecord<'_>) -> Result<()> {
        let Some(files) = &mut self.files else {
            return send(&self.producer, r, self.max_bytes);
        };
        // Refused now, not when the checkpoint is published (where it would fail every
        // restart again).
        check_size(r, self.max_bytes)?;
        let topic_index = &mut self.topic_index;
        let w = files.writer(|_| {
            // Topic indexes are per file.
            topic_index.clear();
            Ok(())
        })?;
        self.scratch.clear();
        encode_record(&mut self.scratch, topic_index, r);
        w.write_all(&self.scratch).map_err(|source| KafkaError::Io {
            path: files.in_progress_path(),
            source,
        })
    }

    /// Pre-commit on barrier `id`: the staged records become durable (without
    /// checkpoints: everything sent so far is acknowledged).
    pub(crate) fn on_barrier(&mut self, id: CheckpointId) -> Result<()> {
        match &mut self.files {
            Some(files) => Ok(files.stage(id)?),
            None => self.flush(),
        }
    }

    /// Commit: publishes every pending checkpoint `<= id` in one transaction.
    pub(crate) fn on_complete(&mut self, id: CheckpointId) -> Result<()> {
        let ready = match &mut self.files {
            Some(files) => files.take_ready(id),
            None => return Ok(()),
        };
        self.publish(&ready)
    }

    /// Publishes the files of `ready` (checkpoint, file) in one transaction with a
    /// marker for the newest, then deletes them.
    fn publish(&mut self, ready: &[(u64, PathBuf)]) -> Result<()> {
        let Some(&(newest, _)) = ready.iter().max_by_key(|(k, _)| *k) else {
            return Ok(());
        };
        let txn_id = self.id.clone();
        let ctx = |what: &str| format!("{what} of `{txn_id}` for checkpoint {newest}");
        self.producer
            .begin_transaction()
            .map_err(|e| KafkaError::client(ctx("begin transaction"), e))?;
        let result = (|| -> Result<()> {
            for (_, path) in ready {
                let (topics, records) = read_staged(path)?;
                for r in &records {
                    send(
                        &self.producer,
                        &OutRecord {
                            topic: &topics[r.topic as usize],
                            partition: r.partition,
                            key: r.key.as_deref(),
                            value: r.value.as_deref(),
                            headers: &r.headers,
                        },
                        self.max_bytes,
                    )?;
                }
            }
            let marker = newest.to_string();
            send(
                &self.producer,
                &OutRecord {
                    topic: MARKER_TOPIC,
                    partition: Some(0),
                    key: Some(self.id.as_bytes()),
                    value: Some(marker.as_bytes()),
                    headers: &[],
                },
                usize::MAX,
            )?;
            self.producer
                .flush(TXN_TIMEOUT)
                .map_err(|e| KafkaError::client(ctx("flush"), e))?;
            self.producer.context().check(|| ctx("publish"))?;
            self.producer
                .commit_transaction(TXN_TIMEOUT)
                .map_err(|e| KafkaError::client(ctx("commit transaction"), e))
        })();
        if let Err(e) = result {
            if let Some((code, reason)) = self.producer.client().fatal_error() {
                // Fenced by a newer producer of this id (a restored run): this one is a
                // zombie and must stop; nothing it sent is committed.
                return Err(KafkaError::Fenced {
                    id: txn_id,
                    checkpoint: newest,
                    reason: format!("{reason} ({code:?})"),
                });
            }
            let _ = self.producer.abort_transaction(TXN_TIMEOUT);
            return Err(e);
        }
        remove_files(ready)
    }

    /// After a restart from `restored`: publishes the pending checkpoints it covers that
    /// were not committed yet, deletes every other staging file.
    pub(crate) fn recover(&mut self, restored: Option<CheckpointId>) -> Result<()> {
        let Some(files) = &self.files else {
            return Ok(());
        };
        let committed = last_marker(&self.bootstrap, &self.id)?;
        let (done, ready): (Vec<_>, Vec<_>) = files
            .recover(restored)?
            .into_iter()
            .partition(|(k, _)| committed.is_some_and(|c| *k <= c));
        remove_files(&done)?;
        tracing::info!(id = %self.id, ?committed, republish = ready.len(), "kafka transactions recovered");
        self.publish(&ready)
    }

    /// Waits until every produced record is acknowledged.
    pub(crate) fn flush(&mut self) -> Result<()> {
        let what = format!("flush producer `{}`", self.id);
        self.producer
            .flush(Duration::from_secs(60))
            .map_err(|e| KafkaError::client(what.clone(), e))?;
        self.producer.context().check(|| what)
    }

    /// Whether records are staged since the last barrier.
    pub(crate) fn has_unstaged(&self) -> bool {
        self.files.as_ref().is_some_and(StagedFiles::has_current)
    }
}

fn remove_files(files: &[(u64, PathBuf)]) -> Result<()> {
    for (_, path) in files {
        std::fs::remove_file(path).map_err(|source| KafkaError::Io {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Appends the entries of `r` to `out`: its topic's definition first if the file
/// (`topic_index`) has not seen the topic.
fn encode_record(out: &mut Vec<u8>, topic_index: &mut HashMap<String, u32>, r: &OutRecord<'_>) {
    let ti = match topic_index.get(r.topic) {
        Some(&i) => i,
        None => {
            let i = topic_index.len() as u32;
            topic_index.insert(r.topic.to_owned(), i);
            out.push(TOPIC_ENTRY);
            put_bytes(out, r.topic.as_bytes());
            i
        }
    };
    out.push(RECORD_ENTRY);
    ti.encode(out);
    r.partition.encode(out);
    put_opt_bytes(out, r.key);
    put_opt_bytes(out, r.value);
    (r.headers.len() as u32).encode(out);
    for (k, v) in r.headers {
        put_bytes(out, k.as_bytes());
        put_bytes(out, v);
    }
}

/// `b` as a [`Codec`] `Option<Vec<u8>>`.
fn put_opt_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => out.push(0),
        Some(b) => {
            out.push(1);
            put_bytes(out, b);
        }
    }
}

/// A staging file's topics and records.
fn read_staged(path: &Path) -> Result<(Vec<String>, Vec<StoredRecord>)> {
    let buf = std::fs::read(path).map_err(|source| KafkaError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_staged(&buf, path)
}

/// Decodes a staging file's bytes (`path` names it in errors).
fn decode_staged(buf: &[u8], path: &Path) -> Result<(Vec<String>, Vec<StoredRecord>)> {
    let bad = |what: String| KafkaError::config(format!("staging file {}: {what}", path.display()));
    let mut rest = buf;
    let mut topics = Vec::new();
    let mut records = Vec::new();
    let corrupt = |e: CodecError| bad(e.reason);
    while !rest.is_empty() {
        match u8::decode(&mut rest).map_err(corrupt)? {
            TOPIC_ENTRY => topics.push(String::decode(&mut rest).map_err(corrupt)?),
            RECORD_ENTRY => {
                let topic = u32::decode(&mut rest).map_err(corrupt)?;
                if topic as usize >= topics.len() {
                    return Err(bad(format!("record of undefined topic {topic}")));
                }
                let partition = Option::<i32>::decode(&mut rest).map_err(corrupt)?;
                let key = Option::<Vec<u8>>::decode(&mut rest).map_err(corrupt)?;
                let value = Option::<Vec<u8>>::decode(&mut rest).map_err(corrupt)?;
                let n = u32::decode(&mut rest).map_err(corrupt)?;
                let headers = (0..n)
                    .map(|_| <(String, Vec<u8>)>::decode(&mut rest))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(corrupt)?;
                records.push(StoredRecord {
                    topic,
                    partition,
                    key,
                    value,
                    headers,
                });
            }
            t => return Err(bad(format!("unknown entry tag {t}"))),
        }
    }
    Ok((topics, records))
}

/// Decodes staging-file bytes into the number of topics and records (for fuzzing).
#[doc(hidden)]
pub fn fuzz_decode_staged(buf: &[u8]) -> Result<(usize, usize)> {
    let (topics, records) = decode_staged(buf, Path::new("<fuzz>"))?;
    Ok((topics.len(), records.len()))
}

/// Creates the marker topic if it is missing.
fn ensure_marker_topic(bootstrap: &str) -> Result<()> {
    let exists = crate::admin::list_topics(bootstrap)?
        .iter()
        .any(|t| t.name == MARKER_TOPIC);
    if !exists && let Err(e) = crate::admin::create_topic(bootstrap, MARKER_TOPIC, 1) {
        // Another subtask may have created it meanwhile.
        let now = crate::admin::list_topics(bootstrap)?;
        if !now.iter().any(|t| t.name == MARKER_TOPIC) {
            return Err(e);
        }
    }
    Ok(())
}

/// The newest committed marker of transactional id `id` (read committed).
fn last_marker(bootstrap: &str, id: &str) -> Result<Option<u64>> {
    Ok(crate::admin::read_topic(bootstrap, MARKER_TOPIC, true)?
        .iter()
        .filter(|m| m.key.as_deref() == Some(id.as_bytes()))
        .filter_map(|m| {
            std::str::from_utf8(m.value.as_deref()?)
                .ok()?
                .parse::<u64>()
                .ok()
        })
        .max())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::read_topic;
    use sabot_test_kit::kafka::{Broker, PRODUCER_SETTINGS};

    fn settings() -> Vec<(String, String)> {
        PRODUCER_SETTINGS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn record(value: &[u8]) -> OutRecord<'_> {
        OutRecord {
            topic: "out",
            partition: Some(0),
            key: None,
            value: Some(value),
            headers: &[],
        }
    }

    /// A crash after a checkpoint's transaction committed but before its staging file
    /// was deleted must not publish it again; a completed checkpoint whose commit never
    /// happened must be published on restore.
    #[test]
    fn recovery_publishes_each_completed_checkpoint_once() {
        let broker = Broker::start().unwrap();
        crate::admin::create_topic(&broker.bootstrap(), "out", 1).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let b = broker.bootstrap();
        let mut log = TxnLog::open(&b, "t-0", Some(dir.path().into()), &settings()).unwrap();
        log.recover(None).unwrap();
        for v in [b"a", b"b", b"c"] {
            log.append(&record(v)).unwrap();
        }
        log.on_barrier(CheckpointId(1)).unwrap();
        let staged = dir.path().join(".t-0.chk-1.pending");
        let copy = std::fs::read(&staged).unwrap();
        log.on_complete(CheckpointId(1)).unwrap();
        assert!(!staged.exists(), "a published file is deleted");
        // The crash: checkpoint 1's file is still there, checkpoint 2 completed
        // without its commit.
        std::fs::write(&staged, copy).unwrap();
        for v in [b"d", b"e"] {
            log.append(&record(v)).unwrap();
        }
        log.on_barrier(CheckpointId(2)).unwrap();
        drop(log);
        let mut log = TxnLog::open(&b, "t-0", Some(dir.path().into()), &settings()).unwrap();
        log.recover(Some(CheckpointId(2))).unwrap();
        let values: Vec<Vec<u8>> = read_topic(&b, "out", true)
            .unwrap()
            .into_iter()
            .filter_map(|r| r.value)
            .collect();
        assert_eq!(values, [b"a", b"b", b"c", b"d", b"e"].map(|v| v.to_vec()));
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "nothing stays staged: {left:?}");
    }

    /// A restore opens the subtask's transactional id again, which fences the producer of
    /// the earlier run: a zombie of it (a process thought dead that still runs) cannot
    /// commit what it staged.
    #[test]
    fn a_restore_fences_the_zombie_of_the_earlier_run() {
        let broker = Broker::start().unwrap();
        crate::admin::create_topic(&broker.bootstrap(), "out", 1).unwrap();
        let b = broker.bootstrap();
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut zombie = TxnLog::open(&b, "t-z", Some(dir_a.path().into()), &settings()).unwrap();
        zombie.recover(None).unwrap();
        zombie.append(&record(b"zombie")).unwrap();
        zombie.on_barrier(CheckpointId(1)).unwrap();
        let mut restored = TxnLog::open(&b, "t-z", Some(dir_b.path().into()), &settings()).unwrap();
        restored.recover(None).unwrap();
        let r = zombie.on_complete(CheckpointId(1));
        let e = r.expect_err("the fenced producer committed").to_string();
        assert!(e.contains("fenced") && e.contains("`t-z`"), "{e}");
    }

    #[test]
    fn staged_records_round_trip_and_corruption_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let headers = vec![("h".to_owned(), b"v".to_vec())];
        let value = vec![0; 300];
        let records = [
            OutRecord {
                topic: "a",
                partition: Some(2),
                key: Some(b"k"),
                value: None,
                headers: &headers,
            },
            OutRecord {
                topic: "b",
                partition: None,
                key: None,
                value: Some(&value),
                headers: &[],
            },
            OutRecord {
                topic: "a",
                partition: Some(0),
                key: None,
                value: Some(b""),
                headers: &[],
            },
        ];
        let mut topic_index = HashMap::new();
        let mut bytes = Vec::new();
        for r in &records {
            encode_record(&mut bytes, &mut topic_index, r);
        }
        std::fs::write(&path, &bytes).unwrap();
        let (topics, got) = read_staged(&path).unwrap();
        assert_eq!(topics, ["a", "b"]);
        assert_eq!(got.len(), 3);
        for (g, r) in got.iter().zip(&records) {
            assert_eq!(topics[g.topic as usize], r.topic);
            assert_eq!(g.partition, r.partition);
            assert_eq!(g.key.as_deref(), r.key);
            assert_eq!(g.value.as_deref(), r.value);
            assert_eq!(g.headers, r.headers);
        }
        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        let e = read_staged(&path).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
    }
}
