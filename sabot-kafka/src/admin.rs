//! Topic administration and plain clients: create and list topics, send records with
//! backpressure, read a topic to its end (what the CLI's `topics`, `produce` and
//! `consume` do).

use sabot_core::ErrorChain;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use crate::{KafkaError, Result};

/// Creates `topic` with `partitions` partitions (replication 1) on the cluster at
/// `bootstrap`; an existing topic is an error.
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| KafkaError::client(format!("admin client for {bootstrap}"), e))?;
    let rt = block::block_on(admin.create_topics(
        &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ));
    let results = rt.map_err(|e| KafkaError::client(format!("create topic `{topic}`"), e))?;
    for r in results {
        if let Err((name, code)) = r {
            return Err(KafkaError::config(format!(
                "cannot create topic `{name}`: {code}"
            )));
        }
    }
    Ok(())
}

/// Runs a future to completion on this thread (the admin API is async; its futures are
/// driven by librdkafka's own threads and only need polling).
pub(crate) mod block {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    use std::thread::{self, Thread};

    struct ThreadWaker(Thread);

    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }

    /// Polls `f` until it is ready, parking between polls.
    pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
        let mut f = pin!(f);
        let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
        let mut cx = Context::from_waker(&waker);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            thread::park();
        }
    }
}

/// A topic and its partition count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    /// The topic's name.
    pub name: String,
    /// How many partitions it has.
    pub partitions: usize,
}

/// The topics of the cluster at `bootstrap`, by name (internal ones, starting with `__`,
/// left out).
pub fn list_topics(bootstrap: &str) -> Result<Vec<TopicInfo>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| KafkaError::client(format!("client for {bootstrap}"), e))?;
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(|e| KafkaError::client(format!("list topics of {bootstrap}"), e))?;
    let mut topics: Vec<TopicInfo> = md
        .topics()
        .iter()
        .filter(|t| !t.name().starts_with("__"))
        .map(|t| TopicInfo {
            name: t.name().to_owned(),
            partitions: t.partitions().len(),
        })
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(topics)
}

/// A consumer context that treats the end of a partition as the news it is (the
/// consumers here ask for it with `enable.partition.eof`), not as an error to log.
pub(crate) struct QuietEof;

impl rdkafka::ClientContext for QuietEof {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        match error {
            rdkafka::error::KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
            | rdkafka::error::KafkaError::PartitionEOF(_) => {
                tracing::debug!(%reason, "kafka: end of partition");
            }
            e => tracing::warn!(error = %ErrorChain(&e), %reason, "kafka client error"),
        }
    }
}

impl rdkafka::consumer::ConsumerContext for QuietEof {}

/// A record to send.
#[derive(Clone, Copy, Debug)]
pub struct OutRecord<'a> {
    /// Its topic.
    pub topic: &'a str,
    /// Its partition (none: by the key's hash).
    pub partition: Option<i32>,
    /// Its key.
    pub key: Option<&'a [u8]>,
    /// Its value (none: a tombstone).
    pub value: Option<&'a [u8]>,
    /// Its headers.
    pub headers: &'a [(String, Vec<u8>)],
}

/// librdkafka's default `message.max.bytes`: the largest record a producer sends.
pub(crate) const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;

/// The producer's `message.max.bytes` among `settings`, or librdkafka's default.
pub(crate) fn max_message_bytes<'a>(
    settings: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<usize> {
    let mut limit = DEFAULT_MAX_MESSAGE_BYTES;
    for (k, v) in settings {
        if k == "message.max.bytes" {
            limit = v.parse().map_err(|_| {
                KafkaError::config(format!("message.max.bytes `{v}` is not a byte count"))
            })?;
        }
    }
    Ok(limit)
}

/// [`KafkaError::RecordTooLarge`] if `r` (key, value and headers; librdkafka adds a few
/// dozen bytes of framing) is over `max_bytes`.
pub(crate) fn check_size(r: &OutRecord<'_>, max_bytes: usize) -> Result<()> {
    let bytes = r.key.map_or(0, <[u8]>::len)
        + r.value.map_or(0, <[u8]>::len)
        + r.headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    if bytes > max_bytes {
        return Err(KafkaError::RecordTooLarge {
            topic: r.topic.to_owned(),
            bytes,
            limit: max_bytes,
        });
    }
    Ok(())
}

/// A producer that keeps its delivery failures: librdkafka reports a record it could not
/// deliver (broker gone past `message.timeout.ms`, record refused by the broker) only
/// to a callback, so without this a flush would succeed over lost records.
pub(crate) type KafkaProducer = ThreadedProducer<Deliveries>;

/// Delivery failures of a [`KafkaProducer`], counted until [`check`](Self::check)ed.
#[derive(Debug, Default)]
pub(crate) struct Deliveries {
    failed: AtomicU64,
    first: Mutex<Option<String>>,
}

impl rdkafka::ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
            if first.is_none() {
                *first = Some(format!(
                    "topic `{}` partition {}: {e}",
                    m.topic(),
                    m.partition()
                ));
            }
        }
    }
}

impl Deliveries {
    /// `Err` naming the first failure if any record could not be delivered since the
    /// last check.
    pub(crate) fn check(&self, what: impl FnOnce() -> String) -> Result<()> {
        // A plain load first: this runs for every record sent.
        if self.failed.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let failed = self.failed.swap(0, Ordering::Relaxed);
        if failed == 0 {
            return Ok(());
        }
        let first = self
            .first
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        Err(KafkaError::Delivery {
            context: what(),
            failed,
            first,
        })
    }
}

/// A producer for `cfg` that keeps its delivery failures.
pub(crate) fn producer(cfg: &ClientConfig, bootstrap: &str) -> Result<KafkaProducer> {
    cfg.create_with_context(Deliveries::default())
        .map_err(|e| KafkaError::client(format!("producer for {bootstrap}"), e))
}

/// Sends `r`, waiting while the producer's queue is full (backpressure); a record over
/// `max_bytes` is refused with [`KafkaError::RecordTooLarge`] before it is sent.
pub(crate) fn send(producer: &KafkaProducer, r: &OutRecord<'_>, max_bytes: usize) -> Result<()> {
    check_size(r, max_bytes)?;
    producer
        .context()
        .check(|| format!("produce to `{}`", r.topic))?;
    let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
    for (k, v) in r.headers {
        headers = headers.insert(Header {
            key: k,
            value: Some(v),
        });
    }
    let mut record = BaseRecord::<[u8], [u8]>::to(r.topic).headers(headers);
    if let Some(k) = r.key {
        record = record.key(k);
    }
    if let Some(v) = r.value {
        record = record.payload(v);
    }
    if let Some(p) = r.partition {
        record = record.partition(p);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                back,
            )) => {
                record = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => {
                return Err(KafkaError::client(format!("produce to `{}`", r.topic), e));
            }
        }
    }
}

/// A plain producer: sends records with backpressure and waits for their
/// acknowledgements on [`flush`](Self::flush).
pub struct Sender {
    bootstrap: String,
    producer: KafkaProducer,
    max_bytes: usize,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("bootstrap", &self.bootstrap)
            .finish()
    }
}

impl Sender {
    /// A producer for the cluster at `bootstrap`; `settings` are librdkafka producer
    /// properties.
    pub fn new(bootstrap: &str, settings: &[(&str, &str)]) -> Result<Self> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", bootstrap)
            .set("linger.ms", "5");
        for (k, v) in settings {
            cfg.set(*k, *v);
        }
        Ok(Sender {
            bootstrap: bootstrap.to_owned(),
            producer: producer(&cfg, bootstrap)?,
            max_bytes: max_message_bytes(settings.iter().copied())?,
        })
    }

    /// Sends `r` (waits while the producer's queue is full). Fails if `r` is larger than
    /// `message.max.bytes`, or if an earlier record could not be delivered.
    pub fn send(&self, r: &OutRecord<'_>) -> Result<()> {
        send(&self.producer, r, self.max_bytes)
    }

    /// Waits until everything sent is acknowledged; `Err` if any record could not be
    /// delivered (after librdkafka's retries, within `message.timeout.ms`).
    pub fn flush(&self) -> Result<()> {
        let what = format!("flush to {}", self.bootstrap);
        self.producer
            .flush(Duration::from_secs(60))
            .map_err(|e| KafkaError::client(what.clone(), e))?;
        self.producer.context().check(|| what)
    }
}

/// Sends `records` and waits until they are acknowledged; `settings` are librdkafka
/// producer properties.
pub fn produce(
    bootstrap: &str,
    records: &[OutRecord<'_>],
    settings: &[(&str, &str)],
) -> Result<()> {
    let sender = Sender::new(bootstrap, settings)?;
    for r in records {
        sender.send(r)?;
    }
    sender.flush()
}

/// The end offset (high watermark) of each partition of `topic`, by partition.
pub fn end_offsets(bootstrap: &str, topic: &str) -> Result<Vec<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| KafkaError::client(format!("client for {bootstrap}"), e))?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| KafkaError::client(format!("metadata of `{topic}`"), e))?;
    let mut parts: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if parts.is_empty() {
        return Err(KafkaError::config(format!(
            "topic `{topic}` does not exist"
        )));
    }
    parts.sort_unstable();
    parts
        .into_iter()
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .map(|(_, high)| high)
                .map_err(|e| {
                    KafkaError::client(format!("end offset of `{topic}` partition {p}"), e)
                })
        })
        .collect()
}

/// A record read back by [`read_topic`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRecord {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub value: Option<Vec<u8>>,
    /// Its headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Every record of `topic` up to its current end, partition by partition (read
/// committed when `read_committed`).
pub fn read_topic(bootstrap: &str, topic: &str, read_committed: bool) -> Result<Vec<ReadRecord>> {
    let consumer: BaseConsumer<QuietEof> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "sabot-read-topic")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set(
            "isolation.level",
            if read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .create_with_context(QuietEof)
        .map_err(|e| KafkaError::client(format!("reader for {bootstrap}"), e))?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| KafkaError::client(format!("metadata of `{topic}`"), e))?;
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut out = Vec::new();
    for p in parts {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(|e| KafkaError::client(format!("end offset of `{topic}` partition {p}"), e))?;
        if high == 0 {
            continue;
        }
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .map_err(|e| KafkaError::client("assign", e))?;
        consumer
            .assign(&tpl)
            .map_err(|e| KafkaError::client("assign", e))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    let headers = m
                        .headers()
                        .map(|hs| {
                            hs.iter()
                                .map(|h| (h.key.to_owned(), h.value.unwrap_or(&[]).to_vec()))
                                .collect()
                        })
                        .unwrap_or_default();
                    out.push(ReadRecord {
                        partition: p,
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                        headers,
                    });
                    if m.offset() + 1 >= high {
                        break;
                    }
                }
                // The end, if the reader is past `high` (the last offsets were
                // transaction markers); short of it, a transaction committed before this
                // call is not yet stable on the broker (its marker is still being
                // written): keep reading.
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {
                    let position = consumer
                        .position()
                        .map_err(|e| KafkaError::client(format!("position in `{topic}`"), e))?;
                    let at = position.find_partition(topic, p).map(|e| e.offset());
                    match at {
                        Some(rdkafka::Offset::Offset(at)) if at < high => {}
                        _ => break,
                    }
                }
                Some(Err(e)) => return Err(KafkaError::client(format!("read `{topic}`"), e)),
                None => {}
            }
            if std::time::Instant::now() > deadline {
                return Err(KafkaError::config(format!(
                    "reading `{topic}` partition {p} to offset {high} took over 60 s"
                )));
            }
        }
    }
    Ok(out)
}
