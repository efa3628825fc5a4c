//! `KafkaSource`: Kafka topics as a Sabot source, with offsets in Sabot's checkpoints.
//!
//! - **Partitions.** Each source subtask reads a fixed share of the topics' partitions
//!   (sorted by topic and partition, subtask `s` of `n` takes every `n`-th from `s`),
//!   assigned directly, so each partition is read by exactly one subtask. A subtask
//!   without partitions (more subtasks than partitions) marks itself idle at once, so
//!   event time moves on without it.
//! - **Offsets.** The next offset of every partition is the source's checkpointed
//!   position; a restored job seeks to it (Kafka's auto-commit is off). After a
//!   checkpoint completes, the offsets can be committed back to the consumer group
//!   ([`KafkaSource::commit_offsets_on_checkpoint`]) so lag tools work; Sabot never reads
//!   them back except with [`StartOffsets::Committed`].
//! - **Event time.** With [`KafkaSource::watermarks`], each partition has its own
//!   watermark (the largest event time it delivered, less the bound, less 1 ms), and the
//!   subtask emits the smallest over its partitions; a partition quiet for the idle
//!   timeout stops holding it back.
//! - **Bounded reading.** [`KafkaSource::bounded`] stops at the end offsets the
//!   partitions had when the subtask started (as Flink's `setBounded(latest)`).
//! - **Bad records** follow a [`BadRecords`] policy: fail (naming topic, partition and
//!   offset), drop (counted in `kafka.bad_records_dropped`), or send the original bytes
//!   to a dead-letter topic with headers saying where they came from and why.
//!
//! Position format: a [frame](sabot_core::codec) `SBKS`, version 2, whose body is the
//! entry count (u32), then per partition topic, partition (i32) and next offset (i64),
//! in the [`sabot_core::codec::Codec`] encoding.

use sabot_core::ErrorChain;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sabot_core::arrow::array::{
    Array, ArrayRef, BinaryArray, Int32Array, Int64Array, StringArray, TimestampMillisecondArray,
    UInt32Array,
};
use sabot_core::arrow::compute::take;
use sabot_core::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use sabot_core::arrow::record_batch::RecordBatch;
use sabot_core::codec::{Codec as ByteCodec, CodecError, frame, unframe};
use sabot_core::metrics::Counter;
use sabot_core::{BadRecordPolicy, CheckpointId, Timestamp};
use sabot_operators::{Result as OpResult, Source, SourceFactory, SourcePoll, TaskContext};
use sabot_time::WatermarkTracker;

use crate::admin::QuietEof;
use crate::dead_letter::DeadLetters;
use crate::{Codec, KafkaError, Result};

/// Where a partition without a checkpointed offset starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartOffsets {
    /// At its first record.
    #[default]
    Earliest,
    /// After its last record.
    Latest,
    /// At the consumer group's committed offset (earliest if none).
    Committed,
}

/// What the source does with a record its codec cannot decode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BadRecords {
    /// Follow the job's policy ([`BadRecordPolicy`]): fail or drop.
    #[default]
    JobPolicy,
    /// Stop the job with an error naming topic, partition and offset.
    Fail,
    /// Drop it and count it in `kafka.bad_records_dropped`.
    Drop,
    /// Send the original key and bytes to this topic, with headers `sabot.topic`,
    /// `sabot.partition`, `sabot.offset` and `sabot.error`; exactly once in a
    /// checkpointed job (see [`crate::dead_letter`]).
    DeadLetter(String),
}

/// Metric: records dropped by the `drop` policy.
pub const BAD_RECORDS_DROPPED: &str = "kafka.bad_records_dropped";
/// Metric: records sent to the dead-letter topic.
pub const BAD_RECORDS_DEAD_LETTERED: &str = "kafka.bad_records_dead_lettered";

/// Reads Kafka topics. See the module docs.
#[derive(Clone, Debug)]
pub struct KafkaSource {
    bootstrap: String,
    topics: Vec<String>,
    codec: Codec,
    group_id: Option<String>,
    start: StartOffsets,
    bounded: bool,
    metadata: bool,
    watermarks: Option<(String, Duration, Option<Duration>)>,
    bad_records: BadRecords,
    max_batch: usize,
    commit_offsets: bool,
    broker_timeout: Duration,
    config: Vec<(String, String)>,
    dead_letter_config: Vec<(String, String)>,
}

/// How long a source waits for an unreachable broker before failing the job, by default
/// (Kafka Streams' `task.timeout.ms` default).
pub const DEFAULT_BROKER_TIMEOUT: Duration = Duration::from_secs(300);

/// Names of the metadata columns ([`KafkaSource::with_metadata`]).
pub const METADATA_COLUMNS: [&str; 5] = [
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "kafka_timestamp",
    "kafka_key",
];

impl KafkaSource {
    /// Reads `topics` from the cluster at `bootstrap` (`host:port[,host:port]`), decoding
    /// payloads with `codec`.
    pub fn new(bootstrap: &str, topics: &[&str], codec: Codec) -> Self {
        KafkaSource {
            bootstrap: bootstrap.to_owned(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            codec,
            group_id: None,
            start: StartOffsets::Earliest,
            bounded: false,
            metadata: false,
            watermarks: None,
            bad_records: BadRecords::JobPolicy,
            max_batch: 4096,
            commit_offsets: false,
            broker_timeout: DEFAULT_BROKER_TIMEOUT,
            config: Vec::new(),
            dead_letter_config: Vec::new(),
        }
    }

    /// The consumer group (for committed offsets and lag tools); default
    /// `sabot-<topics>`.
    pub fn group_id(mut self, group: &str) -> Self {
        self.group_id = Some(group.to_owned());
        self
    }

    /// Where partitions without a checkpointed offset start (default: earliest).
    pub fn start_from(mut self, start: StartOffsets) -> Self {
        self.start = start;
        self
    }

    /// Stops at the end offsets the partitions had when the subtask started.
    pub fn bounded(mut self) -> Self {
        self.bounded = true;
        self
    }

    /// Adds the columns `kafka_topic`, `kafka_partition`, `kafka_offset`,
    /// `kafka_timestamp` (the record's timestamp, ms) and `kafka_key` (bytes).
    pub fn with_metadata(mut self) -> Self {
        self.metadata = true;
        self
    }

    /// Per-partition watermarks on `time_column` (Int64 ms or Timestamp(ms); with
    /// [`with_metadata`](Self::with_metadata) it may be `kafka_timestamp`), trailing each
    /// partition's largest time by `max_out_of_orderness`. A partition quiet for
    /// `idle_timeout` stops holding the subtask's watermark back.
    pub fn watermarks(
        mut self,
        time_column: &str,
        max_out_of_orderness: Duration,
        idle_timeout: Option<Duration>,
    ) -> Self {
        self.watermarks = Some((time_column.to_owned(), max_out_of_orderness, idle_timeout));
        self
    }

    /// What to do with records the codec cannot decode (default: the job's policy).
    pub fn bad_records(mut self, policy: BadRecords) -> Self {
        self.bad_records = policy;
        self
    }

    /// Most records per batch (default 4096).
    pub fn max_batch(mut self, records: usize) -> Self {
        self.max_batch = records.max(1);
        self
    }

    /// Commits the checkpointed offsets to the consumer group when a checkpoint
    /// completes (for lag monitoring; Sabot restores from its checkpoints).
    pub fn commit_offsets_on_checkpoint(mut self) -> Self {
        self.commit_offsets = true;
        self
    }

    /// How long the source keeps retrying when no broker answers (connections refused,
    /// requests timing out) before it fails the job with
    /// [`KafkaError::BrokerUnreachable`]; default [`DEFAULT_BROKER_TIMEOUT`]. While it
    /// waits, librdkafka reconnects and each failure is logged; a broker back in time
    /// lets the source continue where it was.
    pub fn broker_timeout(mut self, timeout: Duration) -> Self {
        self.broker_timeout = timeout.max(Duration::from_millis(100));
        self
    }

    /// Sets a librdkafka consumer property (such as `fetch.max.bytes`).
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.config.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Sets a librdkafka property of the dead-letter producer.
    pub fn set_dead_letter_producer(mut self, key: &str, value: &str) -> Self {
        self.dead_letter_config
            .push((key.to_owned(), value.to_owned()));
        self
    }

    fn name_str(&self) -> String {
        format!("kafka_source({})", self.topics.join(","))
    }

    fn group(&self) -> String {
        self.group_id
            .clone()
            .unwrap_or_else(|| format!("sabot-{}", self.topics.join("-")))
    }

    fn consumer(&self) -> Result<BaseConsumer<QuietEof>> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.bootstrap)
            .set("group.id", self.group())
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .set(
                "auto.offset.reset",
                match self.start {
                    StartOffsets::Latest => "latest",
                    _ => "earliest",
                },
            );
        for (k, v) in &self.config {
            cfg.set(k, v);
        }
        cfg.create_with_context(QuietEof)
            .map_err(|e| KafkaError::client(format!("consumer for {}", self.bootstrap), e))
    }

    fn output_schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .codec
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        if self.metadata {
            fields.extend([
                Field::new("kafka_topic", DataType::Utf8, false),
                Field::new("kafka_partition", DataType::Int32, false),
                Field::new("kafka_offset", DataType::Int64, false),
                Field::new(
                    "kafka_timestamp",
                    DataType::Timestamp(TimeUnit::Millisecond, None),
                    true,
                ),
                Field::new("kafka_key", DataType::Binary, true),
            ]);
        }
        Arc::new(Schema::new(fields))
    }

    fn open(&self, ctx: &TaskContext) -> Result<KafkaReader> {
        let schema = self.output_schema();
        let time_column = match &self.watermarks {
            Some((col, _, _)) => Some(sabot_core::column_index(&schema, col)?),
            None => None,
        };
        let consumer = self.consumer()?;
        // Every partition of the topics, sorted; this subtask's share.
        let mut all = Vec::new();
        for t in &self.topics {
            let md = consumer
                .fetch_metadata(Some(t), Duration::from_secs(10))
                .map_err(|e| KafkaError::client(format!("metadata of topic `{t}`"), e))?;
            let topic = md
                .topics()
                .iter()
                .find(|m| m.name() == t)
                .filter(|m| m.error().is_none() && !m.partitions().is_empty())
                .ok_or_else(|| KafkaError::config(format!("topic `{t}` does not exist")))?;
            all.extend(topic.partitions().iter().map(|p| (t.clone(), p.id())));
        }
        all.sort();
        let mine: Vec<(String, i32)> = all
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % ctx.parallelism == ctx.subtask)
            .map(|(_, tp)| tp)
            .collect();
        let mut stop = Vec::with_capacity(mine.len());
        if self.bounded {
            for (t, p) in &mine {
                let (_, high) = consumer
                    .fetch_watermarks(t, *p, Duration::from_secs(10))
                    .map_err(|e| {
                        KafkaError::client(format!("end offset of `{t}` partition {p}"), e)
                    })?;
                stop.push(high);
            }
        }
        let mut tracker = WatermarkTracker::new(mine.len());
        if let Some((_, _, Some(idle))) = &self.watermarks {
            tracker = tracker.with_idle_timeout(*idle);
        }
        tracker.start(ctx.clock.now_ms());
        let policy = match &self.bad_records {
            BadRecords::JobPolicy => match ctx.bad_records {
                BadRecordPolicy::Drop => BadRecords::Drop,
                _ => BadRecords::Fail,
            },
            other => other.clone(),
        };
        let dead_letters = match &policy {
            BadRecords::DeadLetter(topic) => Some(DeadLetters::open(
                &self.bootstrap,
                topic,
                &format!("{}-{}", self.group(), ctx.subtask),
                ctx,
                &self.dead_letter_config,
            )?),
            _ => None,
        };
        Ok(KafkaReader {
            name: self.name_str(),
            consumer: Arc::new(consumer),
            decoder: self.codec.decoder()?,
            schema,
            index: mine
                .iter()
                .enumerate()
                .fold(HashMap::new(), |mut m, (i, (t, p))| {
                    m.entry(t.clone())
                        .or_insert_with(HashMap::new)
                        .insert(*p, i);
                    m
                }),
            partitions: mine,
            next: BTreeMap::new(),
            stop,
            eof: Vec::new(),
            bounded: self.bounded,
            assigned: false,
            metadata: self.metadata,
            max_batch: self.max_batch,
            time_column,
            bound_ms: self
                .watermarks
                .as_ref()
                .map_or(0, |w| i64::try_from(w.1.as_millis()).unwrap_or(i64::MAX)),
            max_time: Vec::new(),
            tracker,
            idle: false,
            start: self.start,
            commit_offsets: self.commit_offsets,
            committed_positions: Vec::new(),
            policy,
            dead_letters,
            dropped: ctx.metrics.counter(BAD_RECORDS_DROPPED),
            dead_lettered: ctx.metrics.counter(BAD_RECORDS_DEAD_LETTERED),
            ctx: ctx.clone(),
            pending_watermark: None,
            watch: BrokerWatch::new(&self.bootstrap, self.broker_timeout),
        })
    }
}

impl SourceFactory for KafkaSource {
    fn name(&self) -> String {
        self.name_str()
    }

    fn schema(&self) -> SchemaRef {
        self.output_schema()
    }

    fn create(&self, ctx: &TaskContext) -> OpResult<Box<dyn Source>> {
        let name = self.name_str();
        Ok(Box::new(
            self.open(ctx).map_err(|e| e.into_operator(&name))?,
        ))
    }

    fn time_column(&self) -> Option<String> {
        self.watermarks.as_ref().map(|w| w.0.clone())
    }
}

struct KafkaReader {
    name: String,
    /// Shared so that a poll's borrowed messages do not borrow the reader.
    consumer: Arc<BaseConsumer<QuietEof>>,
    decoder: crate::PayloadDecoder,
    schema: SchemaRef,
    /// This subtask's partitions, and their index.
    partitions: Vec<(String, i32)>,
    index: HashMap<String, HashMap<i32, usize>>,
    /// Next offset per partition index (known once a record was read or restored).
    next: BTreeMap<usize, i64>,
    /// Bounded: the end offset per partition index.
    stop: Vec<i64>,
    /// Partitions that reached their end (bounded).
    eof: Vec<bool>,
    bounded: bool,
    assigned: bool,
    metadata: bool,
    max_batch: usize,
    time_column: Option<usize>,
    bound_ms: i64,
    /// Largest event time per partition.
    max_time: Vec<i64>,
    tracker: WatermarkTracker,
    idle: bool,
    start: StartOffsets,
    commit_offsets: bool,
    /// Positions taken at barriers whose checkpoints were not reported complete yet.
    committed_positions: Vec<(CheckpointId, BTreeMap<usize, i64>)>,
    policy: BadRecords,
    dead_letters: Option<DeadLetters>,
    dropped: Counter,
    dead_lettered: Counter,
    ctx: TaskContext,
    /// A watermark to hand out before polling again (after the batch that moved it).
    pending_watermark: Option<Timestamp>,
    watch: BrokerWatch,
}

/// Watches whether the brokers answer: any record or end-of-partition is an answer; when
/// none came for a while, a metadata request probes them; silence past the timeout is
/// an error instead of a source that waits forever.
struct BrokerWatch {
    bootstrap: String,
    timeout: Duration,
    /// Quiet this long: probe.
    probe_after: Duration,
    last_contact: Instant,
    last_probe: Instant,
    last_error: Option<String>,
}

impl BrokerWatch {
    fn new(bootstrap: &str, timeout: Duration) -> Self {
        let now = Instant::now();
        BrokerWatch {
            bootstrap: bootstrap.to_owned(),
            timeout,
            probe_after: (timeout / 4).min(Duration::from_secs(5)),
            last_contact: now,
            last_probe: now,
            last_error: None,
        }
    }

    fn contact(&mut self) {
        if self.last_error.take().is_some() {
            tracing::info!(brokers = %self.bootstrap, "kafka brokers answer again");
        }
        self.last_contact = Instant::now();
    }

    fn error(&mut self, source: &str, e: &rdkafka::error::KafkaError) {
        tracing::warn!(source, brokers = %self.bootstrap, error = %ErrorChain(e), "kafka consumer error, retrying");
        self.last_error = Some(e.to_string());
    }

    /// After a poll without records: probes quiet brokers, fails past the timeout.
    fn check<C: rdkafka::consumer::ConsumerContext>(
        &mut self,
        source: &str,
        consumer: &BaseConsumer<C>,
        topic: &str,
    ) -> Result<()> {
        let now = Instant::now();
        if now.duration_since(self.last_contact) < self.probe_after
            || now.duration_since(self.last_probe) < self.probe_after
        {
            return Ok(());
        }
        let wait = self.probe_after.min(Duration::from_secs(2));
        match consumer.fetch_metadata(Some(topic), wait) {
            Ok(_) => {
                self.contact();
                self.last_probe = Instant::now();
                return Ok(());
            }
            Err(e) => self.error(source, &e),
        }
        self.last_probe = Instant::now();
        let quiet = self.last_probe.duration_since(self.last_contact);
        if quiet >= self.timeout {
            return Err(KafkaError::BrokerUnreachable {
                bootstrap: self.bootstrap.clone(),
                secs: quiet.as_secs_f64(),
                last_error: self.last_error.clone().unwrap_or_default(),
            });
        }
        Ok(())
    }
}

impl KafkaReader {
    fn assign(&mut self) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for (i, (t, p)) in self.partitions.iter().enumerate() {
            let offset = match (self.next.get(&i), self.start) {
                (Some(&o), _) => Offset::Offset(o),
                (None, StartOffsets::Earliest) => Offset::Beginning,
                (None, StartOffsets::Latest) => Offset::End,
                (None, StartOffsets::Committed) => Offset::Stored,
            };
            tpl.add_partition_offset(t, *p, offset)
                .map_err(|e| KafkaError::client(format!("assign `{t}` partition {p}"), e))?;
        }
        self.consumer
            .assign(&tpl)
            .map_err(|e| KafkaError::client("assign partitions", e))?;
        // Bounded: a partition is done from the start if it is empty or its restored
        // offset is past its end.
        self.eof = (0..self.partitions.len())
            .map(|i| {
                self.stop
                    .get(i)
                    .is_some_and(|&s| s == 0 || self.next.get(&i).is_some_and(|&n| n >= s))
            })
            .collect();
        self.max_time = vec![i64::MIN; self.partitions.len()];
        self.assigned = true;
        Ok(())
    }

    /// The end of a bounded read: dead letters of a job without checkpoints are sent
    /// before the source says so.
    fn end(&mut self) -> Result<SourcePoll> {
        if let Some(dl) = &mut self.dead_letters {
            dl.flush()?;
        }
        Ok(SourcePoll::End)
    }

    /// Bounded, and every partition reached its end.
    fn done(&self) -> bool {
        self.bounded && self.eof.iter().all(|&e| e)
    }

    /// One poll: up to `max_batch` records from the assigned partitions, decoded into a
    /// batch, with the positions, end-of-partition flags and watermarks they advance.
    fn poll_batch(&mut self) -> Result<SourcePoll> {
        if let Some(p) = self.before_fetch()? {
            return Ok(p);
        }
        let consumer = self.consumer.clone();
        let (msgs, eofs) = self.fetch(&consumer);
        let now = self.ctx.clock.now_ms();
        let part_of = self.track_positions(&msgs, &eofs)?;
        if msgs.is_empty() {
            return self.without_records(now);
        }
        let (batch, rows) = self.decode(&msgs)?;
        self.advance_watermarks(&batch, &rows, &part_of, now)?;
        Ok(SourcePoll::Batch(batch))
    }

    /// What a poll returns before reading the broker, if anything: a watermark held
    /// back, the end, or idleness when this subtask has no partitions.
    fn before_fetch(&mut self) -> Result<Option<SourcePoll>> {
        if let Some(w) = self.pending_watermark.take() {
            return Ok(Some(SourcePoll::Watermark(w)));
        }
        if !self.assigned {
            self.assign()?;
        }
        if self.partitions.is_empty() {
            if self.bounded {
                return self.end().map(Some);
            }
            if !self.idle {
                self.idle = true;
                return Ok(Some(SourcePoll::MarkIdle));
            }
            return Ok(Some(SourcePoll::Idle));
        }
        if self.done() {
            return self.end().map(Some);
        }
        Ok(None)
    }

    /// Up to `max_batch` records (waiting up to 100 ms for the first), and the
    /// partitions whose end was reached.
    fn fetch<'c>(
        &mut self,
        consumer: &'c BaseConsumer<QuietEof>,
    ) -> (Vec<BorrowedMessage<'c>>, Vec<i32>) {
        let mut msgs = Vec::new();
        let mut eofs = Vec::new();
        let mut wait = Duration::from_millis(100);
        while msgs.len() < self.max_batch {
            match consumer.poll(wait) {
                None => break,
                Some(Ok(m)) => msgs.push(m),
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => eofs.push(p),
                Some(Err(e)) => {
                    // Transient broker trouble is retried by librdkafka; report and go
                    // on (the watch fails the job if it lasts).
                    self.watch.error(&self.name, &e);
                    break;
                }
            }
            wait = Duration::ZERO;
        }
        if !msgs.is_empty() || !eofs.is_empty() {
            self.watch.contact();
        }
        (msgs, eofs)
    }

    /// Advances each partition's next offset and end flag past `msgs` and `eofs`;
    /// returns each message's partition index.
    fn track_positions(
        &mut self,
        msgs: &[BorrowedMessage<'_>],
        eofs: &[i32],
    ) -> Result<Vec<usize>> {
        let mut part_of = Vec::with_capacity(msgs.len());
        for m in msgs {
            let Some(i) = self.index_of(m.topic(), m.partition()) else {
                return Err(KafkaError::config(format!(
                    "received a record of `{}` partition {}, not assigned to this subtask",
                    m.topic(),
                    m.partition()
                )));
            };
            part_of.push(i);
            self.next.insert(i, m.offset() + 1);
            if self.stop.get(i).is_some_and(|&s| m.offset() + 1 >= s) {
                self.eof[i] = true;
            }
        }
        if self.bounded && !eofs.is_empty() {
            // At the end of what the broker has: a partition whose log ends in
            // transaction markers (no record at the end offset) is done once the
            // consumer's position passed its end offset.
            if let Ok(positions) = self.consumer.position() {
                for e in positions.elements() {
                    if let (Offset::Offset(o), Some(i)) =
                        (e.offset(), self.index_of(e.topic(), e.partition()))
                        && o >= self.stop[i]
                        && eofs.contains(&e.partition())
                    {
                        self.eof[i] = true;
                    }
                }
            }
        }
        Ok(part_of)
    }

    /// A poll that read no record: the broker watch, the time-driven watermark,
    /// idleness, or the end.
    fn without_records(&mut self, now: i64) -> Result<SourcePoll> {
        self.watch
            .check(&self.name, &self.consumer, &self.partitions[0].0)?;
        if let Some(wm) = self.tracker.on_tick(now) {
            return Ok(SourcePoll::Watermark(wm));
        }
        if self.tracker.is_idle() && !self.idle {
            self.idle = true;
            return Ok(SourcePoll::MarkIdle);
        }
        if self.done() {
            self.end()
        } else {
            Ok(SourcePoll::Idle)
        }
    }

    /// Decodes `msgs` into a batch (with the metadata columns if asked), handling the
    /// records that do not decode by the bad-record policy; returns the batch and, per
    /// row, the message it came from.
    fn decode(&mut self, msgs: &[BorrowedMessage<'_>]) -> Result<(RecordBatch, Vec<u32>)> {
        let payloads: Vec<Option<&[u8]>> = msgs.iter().map(|m| m.payload()).collect();
        let decoded = self.decoder.decode(&payloads)?;
        for (i, reason) in &decoded.bad {
            let m = &msgs[*i];
            match &self.policy {
                BadRecords::Drop => self.dropped.add(1),
                BadRecords::DeadLetter(_) => {
                    if let Some(dl) = &mut self.dead_letters {
                        dl.send(m, reason)?;
                        self.dead_lettered.add(1);
                    }
                }
                _ => {
                    return Err(KafkaError::BadRecord {
                        topic: m.topic().to_owned(),
                        partition: m.partition(),
                        offset: m.offset(),
                        reason: reason.clone(),
                    });
                }
            }
        }
        let batch = if self.metadata {
            let rows = UInt32Array::from(decoded.rows.clone());
            let meta: [ArrayRef; 5] = [
                Arc::new(
                    msgs.iter()
                        .map(|m| Some(m.topic()))
                        .collect::<StringArray>(),
                ),
                Arc::new(msgs.iter().map(|m| m.partition()).collect::<Int32Array>()),
                Arc::new(msgs.iter().map(|m| m.offset()).collect::<Int64Array>()),
                Arc::new(
                    msgs.iter()
                        .map(|m| m.timestamp().to_millis())
                        .collect::<TimestampMillisecondArray>(),
                ),
                Arc::new(msgs.iter().map(|m| m.key()).collect::<BinaryArray>()),
            ];
            let mut cols = decoded.batch.columns().to_vec();
            for a in meta {
                cols.push(take(&a, &rows, None)?);
            }
            RecordBatch::try_new(self.schema.clone(), cols)?
        } else {
            RecordBatch::try_new(self.schema.clone(), decoded.batch.columns().to_vec())?
        };
        Ok((batch, decoded.rows))
    }

    /// Per-partition watermarks after a batch: the partitions it holds are active, and
    /// (with an event-time column) their largest times advance them.
    fn advance_watermarks(
        &mut self,
        batch: &RecordBatch,
        rows: &[u32],
        part_of: &[usize],
        now: i64,
    ) -> Result<()> {
        let mut active = vec![false; self.partitions.len()];
        for &i in part_of {
            active[i] = true;
        }
        for (i, &a) in active.iter().enumerate() {
            if a && let Some(w) = self.tracker.on_data(i, now).map_err(time_err)? {
                self.pending_watermark = Some(w);
            }
        }
        self.idle = false;
        let Some(col) = self.time_column else {
            return Ok(());
        };
        let times = sabot_core::arrow::compute::cast(batch.column(col), &DataType::Int64)?;
        let times = times
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| KafkaError::config("event time is not Int64"))?;
        for (r, &payload) in rows.iter().enumerate() {
            if times.is_valid(r) {
                let i = part_of[payload as usize];
                self.max_time[i] = self.max_time[i].max(times.value(r));
            }
        }
        for (i, &a) in active.iter().enumerate() {
            if a && self.max_time[i] > i64::MIN {
                let wm = Timestamp::from_millis(
                    self.max_time[i]
                        .saturating_sub(self.bound_ms)
                        .saturating_sub(1),
                );
                // The combined watermark only grows: the last one counts.
                if let Some(w) = self.tracker.on_watermark(i, wm, now).map_err(time_err)? {
                    self.pending_watermark = Some(w);
                }
            }
        }
        Ok(())
    }

    /// The partition index of `topic`/`partition` in this subtask's share.
    fn index_of(&self, topic: &str, partition: i32) -> Option<usize> {
        self.index.get(topic)?.get(&partition).copied()
    }
}

fn time_err(e: sabot_time::TimeError) -> KafkaError {
    KafkaError::Operator(e.into())
}

const POSITION_MAGIC: &[u8; 4] = b"SBKS";
const POSITION_VERSION: u8 = 2;

/// A source position: ((topic, partition), next offset) per partition (the bytes
/// [`decode_position`] reads).
pub fn encode_position(entries: impl ExactSizeIterator<Item = ((String, i32), i64)>) -> Vec<u8> {
    let mut body = Vec::new();
    (entries.len() as u32).encode(&mut body);
    for e in entries {
        e.encode(&mut body);
    }
    frame(POSITION_MAGIC, POSITION_VERSION, &body)
}

/// Reads a position written by the source: ((topic, partition), next offset).
pub fn decode_position(bytes: &[u8]) -> Result<Vec<((String, i32), i64)>> {
    let bad = |e: CodecError| KafkaError::Position { reason: e.reason };
    let (_, mut rest) = unframe(
        bytes,
        POSITION_MAGIC,
        POSITION_VERSION..=POSITION_VERSION,
        "Kafka source position",
    )
    .map_err(bad)?;
    let count = u32::decode(&mut rest).map_err(bad)?;
    let entries = (0..count)
        .map(|_| <((String, i32), i64)>::decode(&mut rest))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(bad)?;
    if !rest.is_empty() {
        return Err(KafkaError::Position {
            reason: format!("{} bytes after the last entry", rest.len()),
        });
    }
    Ok(entries)
}

impl Source for KafkaReader {
    fn poll_next(&mut self) -> OpResult<SourcePoll> {
        let name = self.name.clone();
        self.poll_batch().map_err(|e| e.into_operator(&name))
    }

    fn on_barrier(&mut self, id: CheckpointId) -> OpResult<()> {
        if let Some(dl) = &mut self.dead_letters {
            dl.on_barrier(id).map_err(|e| e.into_operator(&self.name))?;
        }
        if self.commit_offsets {
            self.committed_positions.push((id, self.next.clone()));
        }
        Ok(())
    }

    fn position(&mut self) -> OpResult<Option<Vec<u8>>> {
        Ok(Some(encode_position(self.next.iter().map(
            |(&i, &offset)| (self.partitions[i].clone(), offset),
        ))))
    }

    fn restore(&mut self, positions: &[Vec<u8>]) -> OpResult<()> {
        for bytes in positions {
            let entries = decode_position(bytes).map_err(|e| e.into_operator(&self.name))?;
            for (tp, offset) in entries {
                if let Some(i) = self.index_of(&tp.0, tp.1) {
                    self.next.insert(i, offset);
                }
            }
        }
        if let Some(dl) = &mut self.dead_letters {
            dl.recover(self.ctx.restored_from)
                .map_err(|e| e.into_operator(&self.name))?;
        }
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, id: CheckpointId) -> OpResult<()> {
        if let Some(dl) = &mut self.dead_letters {
            dl.on_complete(id)
                .map_err(|e| e.into_operator(&self.name))?;
        }
        if self.commit_offsets
            && let Some(at) = self.committed_positions.iter().rposition(|(k, _)| *k <= id)
        {
            let offsets = self
                .committed_positions
                .drain(..=at)
                .next_back()
                .map(|(_, o)| o)
                .unwrap_or_default();
            let mut tpl = TopicPartitionList::new();
            for (i, o) in offsets {
                let (t, p) = &self.partitions[i];
                let _ = tpl.add_partition_offset(t, *p, Offset::Offset(o));
            }
            if let Err(e) = self
                .consumer
                .commit(&tpl, rdkafka::consumer::CommitMode::Async)
            {
                tracing::warn!(source = %self.name, error = %ErrorChain(&e), "committing offsets to the group failed");
            }
        }
        Ok(())
    }
}

/// The headers a dead-lettered record carries.
pub(crate) fn dead_letter_headers(m: &BorrowedMessage<'_>, reason: &str) -> Vec<(String, Vec<u8>)> {
    let mut h = vec![
        ("sabot.topic".to_owned(), m.topic().as_bytes().to_vec()),
        (
            "sabot.partition".to_owned(),
            m.partition().to_string().into_bytes(),
        ),
        (
            "sabot.offset".to_owned(),
            m.offset().to_string().into_bytes(),
        ),
        ("sabot.error".to_owned(), reason.as_bytes().to_vec()),
    ];
    if let Some(hs) = m.headers() {
        for i in 0..hs.count() {
            let header = hs.get(i);
            h.push((header.key.to_owned(), header.value.unwrap_or(&[]).to_vec()));
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Positions round trip; any cut or flipped byte is an error, never a panic.
        #[test]
        fn positions_round_trip_and_damage_is_an_error(
            entries in proptest::collection::vec((("[a-z.-]{1,20}", 0i32..1000), 0i64..i64::MAX), 0..20),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
        ) {
            let bytes = encode_position(entries.clone().into_iter());
            prop_assert_eq!(decode_position(&bytes).unwrap(), entries);
            prop_assert!(decode_position(&bytes[..cut.index(bytes.len())]).is_err());
            let mut damaged = bytes.clone();
            damaged[flip.index(bytes.len())] ^= 0x20;
            prop_assert!(decode_position(&damaged).is_err());
        }
    }
}
