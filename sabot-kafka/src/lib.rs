//! Kafka sources, sinks and codecs for the Sabot stream processor.
//!
//! - [`Codec`]: Kafka payloads to and from Arrow batches (JSON, Avro with the Confluent
//!   wire format and a [`SchemaRegistry`], Protobuf, MessagePack, Arrow IPC, raw bytes
//!   and text).
//! - [`KafkaSource`]: partitions assigned to source subtasks, offsets kept in Sabot's
//!   checkpoints, per-partition watermarks, bad-record policies with a dead-letter topic.
//! - [`KafkaSink`]: at-least-once, or exactly-once with Kafka transactions tied to
//!   checkpoints.

pub mod codec;
mod dead_letter;
mod error;
mod sink;
mod source;
pub mod txn;

pub use codec::{Codec, Decoded, PayloadDecoder, PayloadEncoder, Payloads, SchemaRegistry};
pub use error::{ClientError, KafkaError, Result};
pub use sink::{DeliveryGuarantee, KafkaSink};
pub use source::{
    BAD_RECORDS_DEAD_LETTERED, BAD_RECORDS_DROPPED, BadRecords, KafkaSource, METADATA_COLUMNS,
    StartOffsets, decode_position, encode_position,
};
pub mod admin;
