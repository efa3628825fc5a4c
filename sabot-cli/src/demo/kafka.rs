//! The fraud demo from and to Kafka (`sabot demo --brokers`): the generator's
//! transactions are loaded into a topic, and the fraud job reads them from there and
//! writes its alerts to two topics.
//!
//! Topics, with prefix `p` (default `sabot-demo`): `p-transactions` (JSON, keyed and
//! partitioned by account, so an account's transactions keep their order),
//! `p-window-alerts` and `p-spike-alerts` (JSON, keyed by account).
//!
//! Loading resumes: partition `q` holds the transactions of the accounts with
//! `account % partitions == q` in generator order, so a load that was interrupted
//! continues after the records each partition already has (the producer keeps one
//! request in flight, so a partition always holds a prefix of its sequence).

use std::sync::Arc;
use std::time::Duration;

use sabot_core::arrow::array::AsArray;
use sabot_core::arrow::datatypes::{Int64Type, Schema};
use sabot_core::metrics::Metrics;
use sabot_kafka::admin::{OutRecord, Sender, create_topic, end_offsets, list_topics};
use sabot_kafka::{Codec, DeliveryGuarantee, KafkaSink, KafkaSource};
use sabot_operators::{SourceFactory, SourcePoll, TaskContext};

use super::{FraudOutputs, FraudRules, TransactionGenerator, fraud_pipeline};
use sabot::{Error, Result, StreamEnv};

/// Where the Kafka demo's topics are, and how to write to them.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct KafkaDemo {
    /// Bootstrap servers.
    pub brokers: String,
    /// Prefix of the topic names.
    pub prefix: String,
    /// Partitions of the transactions topic when it is created.
    pub partitions: i32,
    /// Alerts are committed exactly once with the job's checkpoints (the job must take
    /// checkpoints); else at least once.
    pub exactly_once: bool,
    /// librdkafka producer properties for every producer.
    pub producer: Vec<(String, String)>,
}

fn kafka_error(e: sabot_kafka::KafkaError) -> Error {
    Error::Kafka(e)
}

impl KafkaDemo {
    /// The demo on the cluster at `brokers`, with `partitions` transaction partitions.
    pub fn new(brokers: &str, partitions: i32) -> Self {
        KafkaDemo {
            brokers: brokers.to_owned(),
            prefix: "sabot-demo".to_owned(),
            partitions: partitions.max(1),
            exactly_once: false,
            producer: Vec::new(),
        }
    }

    /// The transactions topic.
    pub fn transactions(&self) -> String {
        format!("{}-transactions", self.prefix)
    }

    /// The window alerts topic.
    pub fn window_alerts(&self) -> String {
        format!("{}-window-alerts", self.prefix)
    }

    /// The spike alerts topic.
    pub fn spike_alerts(&self) -> String {
        format!("{}-spike-alerts", self.prefix)
    }

    fn settings(&self) -> Vec<(&str, &str)> {
        self.producer
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// Creates the topics that are missing.
    pub fn create_topics(&self) -> Result<()> {
        let existing: Vec<String> = list_topics(&self.brokers)
            .map_err(kafka_error)?
            .into_iter()
            .map(|t| t.name)
            .collect();
        for (topic, partitions) in [
            (self.transactions(), self.partitions),
            (self.window_alerts(), 1),
            (self.spike_alerts(), 1),
        ] {
            if !existing.contains(&topic) {
                create_topic(&self.brokers, &topic, partitions).map_err(kafka_error)?;
            }
        }
        Ok(())
    }

    /// Loads the generator's transactions into the transactions topic, after what each
    /// partition already holds; returns how many records this call sent.
    pub fn load(&self, generator: &TransactionGenerator) -> Result<u64> {
        self.create_topics()?;
        let topic = self.transactions();
        let have = end_offsets(&self.brokers, &topic).map_err(kafka_error)?;
        let partitions = have.len() as i64;
        let mut settings = self.settings();
        settings.extend([
            ("enable.idempotence", "true"),
            ("max.in.flight.requests.per.connection", "1"),
        ]);
        let sender = Sender::new(&self.brokers, &settings).map_err(kafka_error)?;
        let schema = generator.schema();
        let mut encoder = Codec::json(schema.clone())
            .encoder(&schema)
            .map_err(kafka_error)?;
        let account = schema
            .index_of("account")
            .map_err(|e| kafka_error(e.into()))?;
        let mut source = generator.create(&TaskContext::new(0, 1, 128, Metrics::new()))?;
        let mut seen = vec![0i64; have.len()];
        let mut sent = 0;
        loop {
            let batch = match source.poll_next()? {
                SourcePoll::Batch(b) => b,
                SourcePoll::End => break,
                _ => continue,
            };
            let payloads = encoder.encode(&batch).map_err(kafka_error)?;
            let accounts = batch.column(account).as_primitive::<Int64Type>();
            for (r, value) in payloads.iter().enumerate() {
                let a = accounts.value(r);
                let p = a.rem_euclid(partitions) as usize;
                seen[p] += 1;
                if seen[p] <= have[p] {
                    continue; // loaded before
                }
                let key = a.to_string();
                sender
                    .send(&OutRecord {
                        topic: &topic,
                        partition: Some(p as i32),
                        key: Some(key.as_bytes()),
                        value,
                        headers: &[],
                    })
                    .map_err(kafka_error)?;
                sent += 1;
            }
        }
        sender.flush().map_err(kafka_error)?;
        Ok(sent)
    }

    /// Adds the fraud job reading the transactions topic (to its end) and writing the
    /// alerts to the alert topics; `generator` gives the schema and the watermark bound.
    pub fn job(
        &self,
        env: &StreamEnv,
        generator: &TransactionGenerator,
        rules: &FraudRules,
    ) -> Result<FraudOutputs> {
        let max_delay = generator.config().max_delay;
        let source = KafkaSource::new(
            &self.brokers,
            &[&self.transactions()],
            Codec::json(generator.schema()),
        )
        .group_id(&format!("{}-fraud", self.prefix))
        .bounded()
        .watermarks("ts", max_delay, Some(Duration::from_secs(5)));
        let guarantee = if self.exactly_once {
            DeliveryGuarantee::ExactlyOnce
        } else {
            DeliveryGuarantee::AtLeastOnce
        };
        let sink = |topic: String| {
            self.producer.iter().fold(
                // JSON encoding writes the input's own columns.
                KafkaSink::new(
                    &self.brokers,
                    &topic,
                    Codec::json(Arc::new(Schema::empty())),
                )
                .key_column("account")
                .guarantee(guarantee)
                .transactional_id_prefix(&format!("sabot-{topic}")),
                |s, (k, v)| s.set(k, v),
            )
        };
        fraud_pipeline(env.source(source), rules, |window_alerts, spike_alerts| {
            window_alerts.sink(sink(self.window_alerts()));
            spike_alerts.sink(sink(self.spike_alerts()));
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_the_prefix() {
        let d = KafkaDemo::new("b:1", 0);
        assert_eq!(d.partitions, 1);
        assert_eq!(d.transactions(), "sabot-demo-transactions");
        assert_eq!(d.window_alerts(), "sabot-demo-window-alerts");
    }
}
