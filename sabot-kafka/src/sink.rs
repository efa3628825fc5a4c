//! `KafkaSink`: writes batches to a Kafka topic, one message per row.
//!
//! - [`DeliveryGuarantee::AtLeastOnce`]: rows are produced at once by an idempotent
//!   producer; each checkpoint barrier waits until everything before it is
//!   acknowledged, so a completed checkpoint never covers unsent rows (a restart may
//!   send rows again).
//! - [`DeliveryGuarantee::ExactlyOnce`]: rows are published in Kafka transactions tied to
//!   checkpoints with a stable transactional id per subtask, `<prefix>-<subtask>` (see
//!   [`crate::txn`] for the protocol). Read-committed consumers see every row exactly
//!   once, after the checkpoint that covers it completes. Needs a checkpointed job.
//!
//! The message key comes from a column ([`KafkaSink::key_column`]: bytes, text, or any
//! other type as its text by Arrow's cast to Utf8), the partition from a column ([`KafkaSink::partition_column`]) or
//! else from the key's hash (librdkafka's default partitioner); the value is the row's
//! other columns (or [`KafkaSink::value_columns`]) encoded by the codec.

use std::sync::Arc;

use sabot_core::arrow::array::{Array, ArrayRef, BinaryArray, Int32Array, StringArray};
use sabot_core::arrow::compute::cast;
use sabot_core::arrow::datatypes::{DataType, SchemaRef};
use sabot_core::arrow::record_batch::RecordBatch;
use sabot_core::{CheckpointId, column_index};
use sabot_operators::{OperatorError, Result as OpResult, Sink, SinkFactory, TaskContext};

use crate::admin::OutRecord;
use crate::txn::TxnLog;
use crate::{Codec, KafkaError, PayloadEncoder, Result};

/// What a [`KafkaSink`] promises about duplicates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryGuarantee {
    /// Every row arrives; a restart may repeat some.
    #[default]
    AtLeastOnce,
    /// Every row arrives once for read-committed consumers (Kafka transactions).
    ExactlyOnce,
}

/// Writes rows to a Kafka topic. See the module docs.
#[derive(Clone, Debug)]
pub struct KafkaSink {
    bootstrap: String,
    topic: String,
    codec: Codec,
    key_column: Option<String>,
    partition_column: Option<String>,
    topic_column: Option<String>,
    value_columns: Option<Vec<String>>,
    guarantee: DeliveryGuarantee,
    transactional_prefix: Option<String>,
    config: Vec<(String, String)>,
}

impl KafkaSink {
    /// Writes to `topic` on the cluster at `bootstrap`, values encoded by `codec`.
    pub fn new(bootstrap: &str, topic: &str, codec: Codec) -> Self {
        KafkaSink {
            bootstrap: bootstrap.to_owned(),
            topic: topic.to_owned(),
            codec,
            key_column: None,
            partition_column: None,
            topic_column: None,
            value_columns: None,
            guarantee: DeliveryGuarantee::AtLeastOnce,
            transactional_prefix: None,
            config: Vec::new(),
        }
    }

    /// The message key is this column's value (left out of the value unless
    /// [`value_columns`](Self::value_columns) names it).
    pub fn key_column(mut self, column: &str) -> Self {
        self.key_column = Some(column.to_owned());
        self
    }

    /// The target partition is this integer column's value (left out of the value).
    pub fn partition_column(mut self, column: &str) -> Self {
        self.partition_column = Some(column.to_owned());
        self
    }

    /// The target topic is this text column's value, where not null (left out of the
    /// value); the sink's own topic otherwise. For jobs that route rows to several
    /// topics, as Faust-style agents do.
    pub fn topic_column(mut self, column: &str) -> Self {
        self.topic_column = Some(column.to_owned());
        self
    }

    /// The columns encoded as the value (default: all but the key, partition and topic
    /// ones).
    pub fn value_columns(mut self, columns: &[&str]) -> Self {
        self.value_columns = Some(columns.iter().map(|c| (*c).to_owned()).collect());
        self
    }

    /// At-least-once (default) or exactly-once.
    pub fn guarantee(mut self, guarantee: DeliveryGuarantee) -> Self {
        self.guarantee = guarantee;
        self
    }

    /// Exactly-once: the transactional ids' prefix (default `sabot-<topic>`); stable
    /// across restarts of the job, distinct between jobs writing the same topic.
    pub fn transactional_id_prefix(mut self, prefix: &str) -> Self {
        self.transactional_prefix = Some(prefix.to_owned());
        self
    }

    /// Sets a librdkafka producer property (such as `compression.type`).
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.config.push((key.to_owned(), value.to_owned()));
        self
    }

    fn name_str(&self) -> String {
        format!("kafka_sink({})", self.topic)
    }

    /// Where the parts of a message come from in `input`.
    fn layout(&self, input: &SchemaRef) -> Result<Layout> {
        let key = match &self.key_column {
            Some(c) => Some(column_index(input, c)?),
            None => None,
        };
        let partition = match &self.partition_column {
            Some(c) => {
                let i = column_index(input, c)?;
                if !input.field(i).data_type().is_integer() {
                    return Err(KafkaError::config(format!(
                        "partition column `{c}` is {}, not an integer",
                        input.field(i).data_type()
                    )));
                }
                Some(i)
            }
            None => None,
        };
        let topic = match &self.topic_column {
            Some(c) => {
                let i = column_index(input, c)?;
                if input.field(i).data_type() != &DataType::Utf8 {
                    return Err(KafkaError::config(format!(
                        "topic column `{c}` is {}, not Utf8",
                        input.field(i).data_type()
                    )));
                }
                Some(i)
            }
            None => None,
        };
        let values = match &self.value_columns {
            Some(cols) => cols
                .iter()
                .map(|c| column_index(input, c))
                .collect::<std::result::Result<Vec<_>, _>>()?,
            None => (0..input.fields().len())
                .filter(|i| ![key, partition, topic].contains(&Some(*i)))
                .collect(),
        };
        Ok(Layout {
            key,
            partition,
            topic,
            values,
        })
    }

    fn open(&self, input: &SchemaRef, ctx: &TaskContext) -> Result<KafkaWriter> {
        let layout = self.layout(input)?;
        let value_schema = Arc::new(input.project(&layout.values)?);
        let encoder = self.codec.encoder(&value_schema)?;
        let prefix = self
            .transactional_prefix
            .clone()
            .unwrap_or_else(|| format!("sabot-{}", self.topic));
        let dir = match self.guarantee {
            DeliveryGuarantee::AtLeastOnce => None,
            DeliveryGuarantee::ExactlyOnce => Some(
                ctx.checkpoint_dir
                    .as_ref()
                    .ok_or_else(|| {
                        KafkaError::config(
                            "an exactly-once Kafka sink needs a checkpointed job (set checkpoints on the job)",
                        )
                    })?
                    .join("kafka-transactions"),
            ),
        };
        let mut log = TxnLog::open(
            &self.bootstrap,
            &format!("{prefix}-{}", ctx.subtask),
            dir,
            &self.config,
        )?;
        log.recover(ctx.restored_from)?;
        Ok(KafkaWriter {
            name: self.name_str(),
            topic: self.topic.clone(),
            layout,
            encoder,
            log,
        })
    }
}

impl SinkFactory for KafkaSink {
    fn name(&self) -> String {
        self.name_str()
    }

    fn check_schema(&self, input: &SchemaRef) -> OpResult<()> {
        let layout = self
            .layout(input)
            .map_err(|e| e.into_operator(&self.name_str()))?;
        let value_schema = Arc::new(input.project(&layout.values)?);
        self.codec
            .encoder(&value_schema)
            .map(|_| ())
            .map_err(|e| e.into_operator(&self.name_str()))
    }

    fn create(&self, input: &SchemaRef, ctx: &TaskContext) -> OpResult<Box<dyn Sink>> {
        let name = self.name_str();
        Ok(Box::new(
            self.open(input, ctx).map_err(|e| e.into_operator(&name))?,
        ))
    }
}

/// Which columns of the input make a message's parts.
struct Layout {
    key: Option<usize>,
    partition: Option<usize>,
    topic: Option<usize>,
    values: Vec<usize>,
}

struct KafkaWriter {
    name: String,
    topic: String,
    layout: Layout,
    encoder: PayloadEncoder,
    log: TxnLog,
}

impl KafkaWriter {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let Layout {
            key,
            partition,
            topic,
            values,
        } = &self.layout;
        let values = batch.project(values)?;
        let payloads = self.encoder.encode(&values)?;
        // Keys as bytes: binary and text columns as they are, other types as their text
        // (one vectorized cast).
        let keys: Option<ArrayRef> = match *key {
            Some(k) if batch.column(k).data_type() == &DataType::Binary => {
                Some(batch.column(k).clone())
            }
            Some(k) => Some(cast(batch.column(k), &DataType::Utf8)?),
            None => None,
        };
        let key_at = |r: usize| -> Option<&[u8]> {
            let keys = keys.as_ref()?;
            if keys.is_null(r) {
                return None;
            }
            if let Some(a) = keys.as_any().downcast_ref::<BinaryArray>() {
                return Some(a.value(r));
            }
            keys.as_any()
                .downcast_ref::<StringArray>()
                .map(|a| a.value(r).as_bytes())
        };
        let partitions = match *partition {
            Some(p) => Some(cast(batch.column(p), &DataType::Int32)?),
            None => None,
        };
        let partitions = partitions
            .as_ref()
            .and_then(|a| a.as_any().downcast_ref::<Int32Array>());
        let topics = topic.and_then(|t| batch.column(t).as_any().downcast_ref::<StringArray>());
        for (r, value) in payloads.iter().enumerate() {
            let topic = match topics {
                Some(t) if t.is_valid(r) => t.value(r),
                _ => &self.topic,
            };
            self.log.append(&OutRecord {
                topic,
                partition: partitions.and_then(|a| a.is_valid(r).then(|| a.value(r))),
                key: key_at(r),
                value,
                headers: &[],
            })?;
        }
        Ok(())
    }
}

impl Sink for KafkaWriter {
    fn write(&mut self, batch: RecordBatch) -> OpResult<()> {
        self.write_batch(&batch)
            .map_err(|e| e.into_operator(&self.name))
    }

    fn on_checkpoint(&mut self, id: CheckpointId) -> OpResult<()> {
        self.log
            .on_barrier(id)
            .map_err(|e| e.into_operator(&self.name))
    }

    fn notify_checkpoint_complete(&mut self, id: CheckpointId) -> OpResult<()> {
        self.log
            .on_complete(id)
            .map_err(|e| e.into_operator(&self.name))
    }

    fn finish(&mut self) -> OpResult<()> {
        if self.log.has_unstaged() {
            return Err(OperatorError::InvalidPlan {
                operator: self.name.clone(),
                reason: "rows arrived after the final checkpoint's barrier; they cannot be committed exactly once".into(),
            });
        }
        self.log.flush().map_err(|e| e.into_operator(&self.name))
    }
}
