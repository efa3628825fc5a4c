//! Exactly-once publication to Kafka, tied to Sabot's checkpoints.
//!
//! librdkafka cannot resume a transaction another producer opened, so a transaction
//! left open by a crash can only be aborted, never committed. Sabot therefore stages
//! records in a write-ahead file per checkpoint and publishes a checkpoint's records in
//! one Kafka transaction once the checkpoint completed:
//!
//! 1. Between barriers, records are appended to `<dir>/.<id>.inprogress`.
//! 2. Pre-commit, on barrier `K`: the file is fsynced and renamed `<id>.chk-K.pending`.
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
//! Staged record format: per record, topic index (u16 LE), partition (i32 LE, -1: by
//! the key's hash), key and value each as a length (u32 LE, `u32::MAX`: null) and bytes,
//! a header count (u16 LE) and per header a key (u16 length + UTF-8) and value (u32
//! length + bytes).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sabot_core::CheckpointId;

use crate::{KafkaError, Result};

/// The topic holding commit markers (one partition, keyed by transactional id).
pub const MARKER_TOPIC: &str = "sabot-transaction-markers";

const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// One record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Staged {
    pub(crate) topic: String,
    pub(crate) partition: Option<i32>,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
}

fn io_err(path: &Path, e: std::io::Error) -> KafkaError {
    KafkaError::config(format!("staging file {}: {e}", path.display()))
}

/// A producer that publishes records exactly once per completed checkpoint, or at
/// least once without checkpoints. See the module docs.
pub(crate) struct TxnLog {
    bootstrap: String,
    id: String,
    producer: ThreadedProducer<DefaultProducerContext>,
    /// `Some(folder)` in a checkpointed job.
    dir: Option<PathBuf>,
    current: Option<BufWriter<File>>,
    pending: Vec<(u64, PathBuf)>,
    topic_index: HashMap<String, u16>,
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
        let producer: ThreadedProducer<DefaultProducerContext> = cfg
            .create()
            .map_err(|e| KafkaError::client(format!("producer for {bootstrap}"), e))?;
        if let Some(d) = &dir {
            fs::create_dir_all(d).map_err(|e| io_err(d, e))?;
            ensure_marker_topic(bootstrap)?;
            // Fences earlier producers of this id and aborts what they left open.
            producer
                .init_transactions(TXN_TIMEOUT)
                .map_err(|e| KafkaError::client(format!("init transactions of `{id}`"), e))?;
        }
        Ok(TxnLog {
            bootstrap: bootstrap.to_owned(),
            id: id.to_owned(),
            producer,
            dir,
            current: None,
            pending: Vec::new(),
            topic_index: HashMap::new(),
        })
    }

    fn in_progress(&self, dir: &Path) -> PathBuf {
        dir.join(format!(".{}.inprogress", self.id))
    }

    fn pending_path(&self, dir: &Path, k: u64) -> PathBuf {
        dir.join(format!("{}.chk-{k:020}.pending", self.id))
    }

    /// Adds a record: staged (checkpointed job) or produced now.
    pub(crate) fn append(&mut self, r: &Staged) -> Result<()> {
        let Some(dir) = self.dir.clone() else {
            return self.produce(r);
        };
        let path = self.in_progress(&dir);
        if self.current.is_none() {
            let f = File::create(&path).map_err(|e| io_err(&path, e))?;
            self.current = Some(BufWriter::with_capacity(1 << 20, f));
            // Topic indexes are per file.
            self.topic_index.clear();
        }
        let w = self
            .current
            .as_mut()
            .ok_or_else(|| KafkaError::config("no file"))?;
        write_staged(w, &mut self.topic_index, r).map_err(|e| io_err(&path, e))
    }

    /// Pre-commit on barrier `id`: the staged records become durable.
    pub(crate) fn on_barrier(&mut self, id: CheckpointId) -> Result<()> {
        let Some(dir) = self.dir.clone() else {
            return self.flush();
        };
        let Some(w) = self.current.take() else {
            return Ok(());
        };
        let from = self.in_progress(&dir);
        let f = w.into_inner().map_err(|e| io_err(&from, e.into_error()))?;
        f.sync_all().map_err(|e| io_err(&from, e))?;
        let to = self.pending_path(&dir, id.0);
        fs::rename(&from, &to).map_err(|e| io_err(&to, e))?;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        self.pending.push((id.0, to));
        Ok(())
    }

    /// Commit: publishes every pending checkpoint `<= id` in one transaction.
    pub(crate) fn on_complete(&mut self, id: CheckpointId) -> Result<()> {
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(k, _)| *k <= id.0);
        self.pending = later;
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
                for r in read_staged(path)? {
                    self.produce(&r)?;
                }
            }
            let value = newest.to_string();
            self.produce(&Staged {
                topic: MARKER_TOPIC.to_owned(),
                partition: Some(0),
                key: Some(self.id.as_bytes().to_vec()),
                value: Some(value.into_bytes()),
                headers: Vec::new(),
            })?;
            self.producer
                .commit_transaction(TXN_TIMEOUT)
                .map_err(|e| KafkaError::client(ctx("commit transaction"), e))
        })();
        if let Err(e) = result {
            let _ = self.producer.abort_transaction(TXN_TIMEOUT);
            return Err(e);
        }
        for (_, path) in ready {
            fs::remove_file(path).map_err(|e| io_err(path, e))?;
        }
        Ok(())
    }

    /// After a restart from `restored`: publishes the pending checkpoints it covers that
    /// were not committed yet, deletes every other staged file.
    pub(crate) fn recover(&mut self, restored: Option<CheckpointId>) -> Result<()> {
        let Some(dir) = self.dir.clone() else {
            return Ok(());
        };
        let committed = last_marker(&self.bootstrap, &self.id)?;
        let mut ready = Vec::new();
        let entries = fs::read_dir(&dir).map_err(|e| io_err(&dir, e))?;
        let prefix = format!("{}.chk-", self.id);
        let hidden = format!(".{}.", self.id);
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            if let Some(k) = name
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(".pending"))
                .and_then(|k| k.parse::<u64>().ok())
            {
                let covered = restored.is_some_and(|r| k <= r.0);
                let done = committed.is_some_and(|c| k <= c);
                if covered && !done {
                    ready.push((k, path));
                } else {
                    fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
                }
            } else if name.starts_with(&hidden) {
                fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
            }
        }
        ready.sort();
        tracing::info!(id = %self.id, ?committed, republish = ready.len(), "kafka transactions recovered");
        self.publish(&ready)
    }

    fn produce(&mut self, r: &Staged) -> Result<()> {
        let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
        for (k, v) in &r.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let mut record = BaseRecord::<[u8], [u8]>::to(&r.topic).headers(headers);
        if let Some(k) = &r.key {
            record = record.key(k);
        }
        if let Some(v) = &r.value {
            record = record.payload(v);
        }
        if let Some(p) = r.partition {
            record = record.partition(p);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    rec,
                )) => {
                    // Backpressure: wait for deliveries to free the queue.
                    record = rec;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    return Err(KafkaError::client(format!("produce to `{}`", r.topic), e));
                }
            }
        }
    }

    /// Waits until every produced record is acknowledged.
    pub(crate) fn flush(&mut self) -> Result<()> {
        self.producer
            .flush(Duration::from_secs(60))
            .map_err(|e| KafkaError::client(format!("flush producer `{}`", self.id), e))
    }

    /// Whether records are staged since the last barrier.
    pub(crate) fn has_unstaged(&self) -> bool {
        self.current.is_some()
    }
}

/// Appends `r` to a staging file whose topics so far are `topics` (name -> index).
fn write_staged(
    w: &mut impl Write,
    topics: &mut HashMap<String, u16>,
    r: &Staged,
) -> std::io::Result<()> {
    let ti = match topics.get(&r.topic) {
        Some(&i) => i,
        None => {
            let i = topics.len() as u16;
            topics.insert(r.topic.clone(), i);
            // A topic definition: index u16::MAX, then the name.
            w.write_all(&u16::MAX.to_le_bytes())?;
            write_bytes(w, Some(r.topic.as_bytes()))?;
            i
        }
    };
    w.write_all(&ti.to_le_bytes())?;
    w.write_all(&r.partition.unwrap_or(-1).to_le_bytes())?;
    write_bytes(w, r.key.as_deref())?;
    write_bytes(w, r.value.as_deref())?;
    w.write_all(&(r.headers.len() as u16).to_le_bytes())?;
    for (k, v) in &r.headers {
        w.write_all(&(k.len() as u16).to_le_bytes())?;
        w.write_all(k.as_bytes())?;
        write_bytes(w, Some(v))?;
    }
    Ok(())
}

fn write_bytes(w: &mut impl Write, b: Option<&[u8]>) -> std::io::Result<()> {
    match b {
        Some(b) => {
            w.write_all(&(b.len() as u32).to_le_bytes())?;
            w.write_all(b)
        }
        None => w.write_all(&u32::MAX.to_le_bytes()),
    }
}

fn read_staged(path: &Path) -> Result<Vec<Staged>> {
    let bad = |what: &str| KafkaError::config(format!("staging file {}: {what}", path.display()));
    let mut buf = Vec::new();
    BufReader::new(File::open(path).map_err(|e| io_err(path, e))?)
        .read_to_end(&mut buf)
        .map_err(|e| io_err(path, e))?;
    let mut rest = buf.as_slice();
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if rest.len() < n {
            return None;
        }
        let (a, b) = rest.split_at(n);
        *rest = b;
        Some(a)
    }
    fn bytes(rest: &mut &[u8]) -> Option<Option<Vec<u8>>> {
        let n = u32::from_le_bytes(take(rest, 4)?.try_into().ok()?);
        if n == u32::MAX {
            return Some(None);
        }
        Some(Some(take(rest, n as usize)?.to_vec()))
    }
    let mut topics: Vec<String> = Vec::new();
    let mut out = Vec::new();
    while !rest.is_empty() {
        let parse = |rest: &mut &[u8], topics: &mut Vec<String>| -> Option<Option<Staged>> {
            let ti = u16::from_le_bytes(take(rest, 2)?.try_into().ok()?);
            if ti == u16::MAX {
                let name = bytes(rest)??;
                topics.push(String::from_utf8(name).ok()?);
                return Some(None);
            }
            let topic = topics.get(ti as usize)?.clone();
            let p = i32::from_le_bytes(take(rest, 4)?.try_into().ok()?);
            let key = bytes(rest)?;
            let value = bytes(rest)?;
            let hn = u16::from_le_bytes(take(rest, 2)?.try_into().ok()?);
            let mut headers = Vec::with_capacity(hn as usize);
            for _ in 0..hn {
                let kl = u16::from_le_bytes(take(rest, 2)?.try_into().ok()?);
                let k = String::from_utf8(take(rest, kl as usize)?.to_vec()).ok()?;
                headers.push((k, bytes(rest)?.unwrap_or_default()));
            }
            Some(Some(Staged {
                topic,
                partition: (p >= 0).then_some(p),
                key,
                value,
                headers,
            }))
        };
        match parse(&mut rest, &mut topics) {
            Some(Some(r)) => out.push(r),
            Some(None) => {}
            None => return Err(bad("truncated or corrupt record")),
        }
    }
    Ok(out)
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
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("sabot-markers-{id}"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .map_err(|e| KafkaError::client("marker reader", e))?;
    let (_, high) = consumer
        .fetch_watermarks(MARKER_TOPIC, 0, Duration::from_secs(10))
        .map_err(|e| KafkaError::client(format!("end of `{MARKER_TOPIC}`"), e))?;
    if high == 0 {
        return Ok(None);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(MARKER_TOPIC, 0, Offset::Beginning)
        .map_err(|e| KafkaError::client("assign markers", e))?;
    consumer
        .assign(&tpl)
        .map_err(|e| KafkaError::client("assign markers", e))?;
    let mut newest = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                if m.key() == Some(id.as_bytes())
                    && let Some(k) = m
                        .payload()
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(|v| v.parse::<u64>().ok())
                {
                    newest = newest.max(Some(k));
                }
                if m.offset() + 1 >= high {
                    break;
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => return Err(KafkaError::client("read markers", e)),
            None => {}
        }
        if std::time::Instant::now() > deadline {
            return Err(KafkaError::config(format!(
                "reading `{MARKER_TOPIC}` did not finish within 30 s"
            )));
        }
    }
    Ok(newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_records_round_trip_and_corruption_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let records = vec![
            Staged {
                topic: "a".into(),
                partition: Some(2),
                key: Some(b"k".to_vec()),
                value: None,
                headers: vec![("h".into(), b"v".to_vec())],
            },
            Staged {
                topic: "b".into(),
                partition: None,
                key: None,
                value: Some(vec![0; 300]),
                headers: vec![],
            },
        ];
        let mut w = BufWriter::new(File::create(&path).unwrap());
        let mut topics = HashMap::new();
        for r in &records {
            write_staged(&mut w, &mut topics, r).unwrap();
        }
        drop(w);
        assert_eq!(read_staged(&path).unwrap(), records);
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        let e = read_staged(&path).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
    }
}
