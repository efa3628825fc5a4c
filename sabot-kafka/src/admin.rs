//! Topic administration: create and list topics.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

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
