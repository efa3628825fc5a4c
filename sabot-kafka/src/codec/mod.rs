//! Codecs between Kafka message payloads and Arrow batches, both directions.
//!
//! | codec | payload | Arrow schema |
//! |-------|---------|--------------|
//! | [`Codec::json`] | one JSON object (several concatenated objects give several rows) | given |
//! | [`Codec::msgpack`] | one MessagePack map, keys = column names | given |
//! | [`Codec::avro`], [`Codec::avro_registry`] | Confluent wire format: `0x00`, schema id (u32 BE), Avro binary datum | from the Avro schema |
//! | [`Codec::protobuf`] | one Protobuf message of a type from a descriptor set | from the message type |
//! | [`Codec::arrow_ipc`] | an Arrow IPC stream (schema, then batches) | given, checked |
//! | [`Codec::bytes`], [`Codec::text`] | the raw payload | one column `value` (Binary / Utf8) |
//!
//! Decoding is batched and vectorized where the format allows (JSON through arrow-json's
//! tape decoder, Avro through arrow-avro's columnar decoder). A payload that cannot be
//! decoded does not spoil its batch: [`PayloadDecoder::decode`] first decodes the whole
//! batch in one pass and, only if that fails, decodes payload by payload to name the bad
//! ones, so bad-record policies get the exact set of bad payloads and the good rows.
//!
//! Encoding gives one payload per row (one Kafka message per row).

mod convert;
mod registry;

use std::collections::HashMap;
use std::fmt;
use std::io::Cursor;
use std::sync::Arc;

use arrow_avro::reader::ReaderBuilder as AvroReaderBuilder;
use arrow_avro::schema::{
    AvroSchema, Fingerprint, FingerprintAlgorithm, FingerprintStrategy, SCHEMA_METADATA_KEY,
    SchemaStore,
};
use arrow_avro::writer::WriterBuilder as AvroWriterBuilder;
use arrow_avro::writer::format::AvroSoeFormat;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use sabot_core::arrow::array::{ArrayRef, BinaryArray, StringArray};
use sabot_core::arrow::compute::concat_batches;
use sabot_core::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use sabot_core::arrow::record_batch::RecordBatch;

pub use registry::SchemaRegistry;

/// Splits an HTTP/1.1 response into status and body (for fuzzing the registry client's
/// parser).
#[doc(hidden)]
pub fn fuzz_parse_http_response(raw: &[u8]) -> std::result::Result<(u16, Vec<u8>), String> {
    registry::parse_response(raw)
}

use crate::{KafkaError, Result};

/// Most rows one decoder call buffers before it spills a finished batch.
const DECODER_BATCH: usize = 8192;

/// A format for message payloads, with the Arrow schema of the decoded rows. See the
/// module docs for the formats.
#[derive(Clone)]
pub struct Codec {
    kind: Kind,
    schema: SchemaRef,
}

#[derive(Clone)]
enum Kind {
    Json,
    MessagePack,
    ArrowIpc,
    Bytes,
    Text,
    Avro(Arc<AvroSpec>),
    Protobuf(MessageDescriptor),
}

/// An Avro codec's schemas: the reader schema rows are decoded into, the id the encoder
/// writes, and where unknown writer schemas come from.
struct AvroSpec {
    reader_schema: String,
    schema_id: u32,
    registry: Option<SchemaRegistry>,
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Codec")
            .field("format", &self.name())
            .field("schema", &self.schema)
            .finish()
    }
}

impl Codec {
    /// JSON objects; fields are matched to `schema`'s columns by name (missing fields
    /// give nulls, unknown fields are ignored).
    pub fn json(schema: SchemaRef) -> Self {
        Codec {
            kind: Kind::Json,
            schema,
        }
    }

    /// MessagePack maps from column name to value.
    pub fn msgpack(schema: SchemaRef) -> Self {
        Codec {
            kind: Kind::MessagePack,
            schema,
        }
    }

    /// Arrow IPC streams of `schema` (one message may hold many rows).
    pub fn arrow_ipc(schema: SchemaRef) -> Self {
        Codec {
            kind: Kind::ArrowIpc,
            schema,
        }
    }

    /// The raw payload as one Binary column `value` (a tombstone is a null).
    pub fn bytes() -> Self {
        Codec {
            kind: Kind::Bytes,
            schema: Arc::new(Schema::new(vec![Field::new(
                "value",
                DataType::Binary,
                true,
            )])),
        }
    }

    /// The payload as one UTF-8 column `value` (invalid UTF-8 is a bad record).
    pub fn text() -> Self {
        Codec {
            kind: Kind::Text,
            schema: Arc::new(Schema::new(vec![Field::new("value", DataType::Utf8, true)])),
        }
    }

    /// Avro in the Confluent wire format with a fixed schema: rows are decoded into
    /// `schema_json` (payloads must carry `schema_id`, the id it has in the registry the
    /// producers use), and encoded with it under `schema_id`.
    pub fn avro(schema_json: &str, schema_id: u32) -> Result<Self> {
        Self::avro_spec(AvroSpec {
            reader_schema: schema_json.to_owned(),
            schema_id,
            registry: None,
        })
    }

    /// Avro in the Confluent wire format with schemas from a schema registry: rows are
    /// decoded into the latest schema of `subject` (writer schemas of other ids are
    /// fetched by id, cached, and resolved against it), and encoded with that schema's id.
    pub fn avro_registry(registry: SchemaRegistry, subject: &str) -> Result<Self> {
        let (schema_id, reader_schema) = registry.latest(subject)?;
        Self::avro_spec(AvroSpec {
            reader_schema,
            schema_id,
            registry: Some(registry),
        })
    }

    fn avro_spec(spec: AvroSpec) -> Result<Self> {
        let decoder = avro_decoder(
            &spec.reader_schema,
            &[(spec.schema_id, &spec.reader_schema)],
        )?;
        let schema = strip_metadata(&decoder.schema());
        Ok(Codec {
            kind: Kind::Avro(Arc::new(spec)),
            schema,
        })
    }

    /// Protobuf messages of type `message` (a full name such as `shop.Order`) from a
    /// serialized `FileDescriptorSet` (`protoc --descriptor_set_out`, with imports).
    /// Scalars map to Arrow scalars, enums to their names (Utf8), nested messages to
    /// structs, repeated fields to lists, `bytes` to base64 text; map fields are refused.
    pub fn protobuf(descriptor_set: &[u8], message: &str) -> Result<Self> {
        let pool = DescriptorPool::decode(descriptor_set).map_err(|e| KafkaError::Codec {
            format: "protobuf",
            reason: format!("invalid descriptor set: {e}"),
        })?;
        let desc = pool
            .get_message_by_name(message)
            .ok_or_else(|| KafkaError::Codec {
                format: "protobuf",
                reason: format!(
                    "message `{message}` is not in the descriptor set (it has: {})",
                    pool.all_messages()
                        .map(|m| m.full_name().to_owned())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        let schema = Arc::new(Schema::new(convert::proto_fields(&desc, 0)?));
        Ok(Codec {
            kind: Kind::Protobuf(desc),
            schema,
        })
    }

    /// The format's name: `json`, `msgpack`, `avro`, `protobuf`, `arrow`, `bytes`, `text`.
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Json => "json",
            Kind::MessagePack => "msgpack",
            Kind::ArrowIpc => "arrow",
            Kind::Bytes => "bytes",
            Kind::Text => "text",
            Kind::Avro(_) => "avro",
            Kind::Protobuf(_) => "protobuf",
        }
    }

    /// The schema of decoded rows.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// A decoder (one per source subtask).
    pub fn decoder(&self) -> Result<PayloadDecoder> {
        let inner: Box<dyn RowDecoder> = match &self.kind {
            Kind::Json => Box::new(JsonRows::new(self.schema.clone())?),
            Kind::MessagePack => Box::new(SerdeRows::new(self.schema.clone(), MsgpackParse)?),
            Kind::Protobuf(desc) => Box::new(SerdeRows::new(
                self.schema.clone(),
                ProtoParse(desc.clone()),
            )?),
            Kind::ArrowIpc => Box::new(IpcRows {
                schema: self.schema.clone(),
                done: Vec::new(),
            }),
            Kind::Bytes | Kind::Text => Box::new(RawRows {
                text: matches!(self.kind, Kind::Text),
                schema: self.schema.clone(),
                values: Vec::new(),
            }),
            Kind::Avro(spec) => Box::new(AvroRows::new(spec.clone())?),
        };
        Ok(PayloadDecoder {
            format: self.name(),
            inner,
        })
    }

    /// An encoder of batches of schema `input` (one per sink subtask). The input must
    /// have the codec's columns, of the same types (bytes/text: one column of that type).
    pub fn encoder(&self, input: &SchemaRef) -> Result<PayloadEncoder> {
        let format = self.name();
        let kind = match &self.kind {
            Kind::Bytes | Kind::Text => {
                let want = if matches!(self.kind, Kind::Text) {
                    DataType::Utf8
                } else {
                    DataType::Binary
                };
                if input.fields().len() != 1 || input.field(0).data_type() != &want {
                    return Err(KafkaError::Codec {
                        format,
                        reason: format!(
                            "writes exactly one {want} column, but the input has {:?}",
                            input
                                .fields()
                                .iter()
                                .map(|f| format!("{}: {}", f.name(), f.data_type()))
                                .collect::<Vec<_>>()
                        ),
                    });
                }
                EncodeKind::Raw
            }
            Kind::Json => EncodeKind::Json,
            Kind::MessagePack => EncodeKind::MessagePack,
            Kind::Protobuf(desc) => {
                check_same_columns(format, &self.schema, input)?;
                EncodeKind::Protobuf(desc.clone())
            }
            Kind::ArrowIpc => {
                check_same_columns(format, &self.schema, input)?;
                EncodeKind::ArrowIpc
            }
            Kind::Avro(spec) => {
                check_same_columns(format, &self.schema, input)?;
                let mut md = input.metadata().clone();
                md.insert(SCHEMA_METADATA_KEY.to_owned(), spec.reader_schema.clone());
                let schema = Schema::new_with_metadata(input.fields().clone(), md);
                let encoder = AvroWriterBuilder::new(schema)
                    .with_fingerprint_strategy(FingerprintStrategy::Id(spec.schema_id))
                    .build_encoder::<AvroSoeFormat>()
                    .map_err(|e| avro_error(e.to_string()))?;
                EncodeKind::Avro(Box::new(encoder))
            }
        };
        Ok(PayloadEncoder { format, kind })
    }
}

fn strip_metadata(schema: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(schema.fields().clone()))
}

fn check_same_columns(format: &'static str, want: &SchemaRef, input: &SchemaRef) -> Result<()> {
    let same = want.fields().len() == input.fields().len()
        && want
            .fields()
            .iter()
            .zip(input.fields())
            .all(|(a, b)| a.name() == b.name() && a.data_type().equals_datatype(b.data_type()));
    if same {
        return Ok(());
    }
    let show = |s: &SchemaRef| {
        s.fields()
            .iter()
            .map(|f| format!("{}: {}", f.name(), f.data_type()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(KafkaError::Codec {
        format,
        reason: format!(
            "the input's columns ({}) differ from the codec's schema ({})",
            show(input),
            show(want)
        ),
    })
}

fn avro_error(reason: String) -> KafkaError {
    KafkaError::Codec {
        format: "avro",
        reason,
    }
}

fn avro_decoder(
    reader_schema: &str,
    writers: &[(u32, &str)],
) -> Result<arrow_avro::reader::Decoder> {
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    for (id, json) in writers {
        store
            .set(Fingerprint::Id(*id), AvroSchema::new((*json).to_owned()))
            .map_err(|e| avro_error(format!("schema {id}: {e}")))?;
    }
    AvroReaderBuilder::new()
        .with_batch_size(DECODER_BATCH)
        .with_reader_schema(AvroSchema::new(reader_schema.to_owned()))
        .with_writer_schema_store(store)
        .build_decoder()
        .map_err(|e| avro_error(format!("invalid schema: {e}")))
}

/// What [`PayloadDecoder::decode`] made of a set of payloads.
#[derive(Debug)]
pub struct Decoded {
    /// The rows of the good payloads, in payload order.
    pub batch: RecordBatch,
    /// For each row of `batch`, the index of the payload it came from (a payload may give
    /// several rows, in Arrow IPC or concatenated JSON).
    pub rows: Vec<u32>,
    /// The payloads that could not be decoded: (index, reason), in index order.
    pub bad: Vec<(usize, String)>,
}

/// Decodes payloads into Arrow batches. See [`Codec::decoder`].
pub struct PayloadDecoder {
    format: &'static str,
    inner: Box<dyn RowDecoder>,
}

impl fmt::Debug for PayloadDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PayloadDecoder")
            .field("format", &self.format)
            .finish()
    }
}

impl PayloadDecoder {
    /// Decodes `payloads` (`None`: a tombstone, a message without a value). Bad payloads
    /// are reported in [`Decoded::bad`], never as an `Err`; `Err` is for failures that
    /// are not about one payload (such as an unreachable schema registry).
    pub fn decode(&mut self, payloads: &[Option<&[u8]>]) -> Result<Decoded> {
        // Fast path: every payload in one pass.
        match self.decode_all(payloads) {
            Ok(decoded) => return Ok(decoded),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Payload(_)) => {}
        }
        // Slow path: payload by payload, to name the bad ones.
        self.inner.reset()?;
        let mut batches = Vec::new();
        let mut rows = Vec::new();
        let mut bad = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            match self.decode_all(std::slice::from_ref(p)) {
                Ok(d) => {
                    rows.extend(std::iter::repeat_n(i as u32, d.batch.num_rows()));
                    batches.push(d.batch);
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Payload(reason)) => {
                    bad.push((i, reason));
                    self.inner.reset()?;
                }
            }
        }
        let schema = self.inner.schema();
        let batch = concat_batches(&schema, &batches)?;
        Ok(Decoded { batch, rows, bad })
    }

    fn decode_all(&mut self, payloads: &[Option<&[u8]>]) -> Result<Decoded, Failure> {
        let mut rows = Vec::with_capacity(payloads.len());
        for (i, p) in payloads.iter().enumerate() {
            let n = self.inner.push(*p)?;
            if n == 0 {
                return Err(Failure::Payload("the payload holds no record".into()));
            }
            rows.extend(std::iter::repeat_n(i as u32, n));
        }
        let batch = self.inner.flush()?;
        if batch.num_rows() != rows.len() {
            return Err(Failure::Payload(format!(
                "decoded {} rows from {} records",
                batch.num_rows(),
                rows.len()
            )));
        }
        Ok(Decoded {
            batch,
            rows,
            bad: Vec::new(),
        })
    }
}

/// Why a decode failed: one payload's fault, or not.
enum Failure {
    Payload(String),
    Fatal(KafkaError),
}

impl From<KafkaError> for Failure {
    fn from(e: KafkaError) -> Self {
        Failure::Fatal(e)
    }
}

/// One format's row decoder: payloads in, one batch out.
trait RowDecoder: Send {
    /// Buffers one payload; returns how many rows it holds.
    fn push(&mut self, payload: Option<&[u8]>) -> Result<usize, Failure>;
    /// Everything buffered since the last flush, as one batch.
    fn flush(&mut self) -> Result<RecordBatch, Failure>;
    /// Forgets everything buffered (after a failure).
    fn reset(&mut self) -> Result<()>;
    /// The schema of the batches.
    fn schema(&self) -> SchemaRef;
}

fn tombstone() -> Failure {
    Failure::Payload("null payload (a tombstone): this format needs a value".into())
}

/// Concatenates spilled batches and the decoder's last one.
fn concat_spilled(
    schema: &SchemaRef,
    done: &mut Vec<RecordBatch>,
    last: Option<RecordBatch>,
) -> Result<RecordBatch, Failure> {
    done.extend(last);
    let out = concat_batches(schema, done.iter()).map_err(|e| Failure::Payload(e.to_string()));
    done.clear();
    out
}

struct JsonRows {
    schema: SchemaRef,
    decoder: arrow_json::reader::Decoder,
    done: Vec<RecordBatch>,
}

fn json_decoder(schema: &SchemaRef) -> Result<arrow_json::reader::Decoder> {
    Ok(arrow_json::ReaderBuilder::new(schema.clone())
        .with_batch_size(DECODER_BATCH)
        .build_decoder()?)
}

impl JsonRows {
    fn new(schema: SchemaRef) -> Result<Self> {
        Ok(JsonRows {
            decoder: json_decoder(&schema)?,
            schema,
            done: Vec::new(),
        })
    }
}

impl RowDecoder for JsonRows {
    fn push(&mut self, payload: Option<&[u8]>) -> Result<usize, Failure> {
        let mut rest = payload.ok_or_else(tombstone)?;
        let before = self.decoder.len() + self.done.iter().map(|b| b.num_rows()).sum::<usize>();
        let bad = |e: sabot_core::arrow::error::ArrowError| Failure::Payload(e.to_string());
        while !rest.is_empty() {
            let n = self.decoder.decode(rest).map_err(bad)?;
            rest = &rest[n..];
            if !rest.is_empty() {
                // The decoder's batch is full: spill it.
                if let Some(b) = self.decoder.flush().map_err(bad)? {
                    self.done.push(b);
                }
            }
        }
        if self.decoder.has_partial_record() {
            return Err(Failure::Payload("truncated JSON value".into()));
        }
        let after = self.decoder.len() + self.done.iter().map(|b| b.num_rows()).sum::<usize>();
        Ok(after - before)
    }

    fn flush(&mut self) -> Result<RecordBatch, Failure> {
        let last = self
            .decoder
            .flush()
            .map_err(|e| Failure::Payload(e.to_string()))?;
        concat_spilled(&self.schema, &mut self.done, last)
    }

    fn reset(&mut self) -> Result<()> {
        self.decoder = json_decoder(&self.schema)?;
        self.done.clear();
        Ok(())
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// Parses one payload into a value arrow-json can take through serde.
trait SerdeParse: Send {
    type Row: serde::Serialize;
    fn parse(&self, payload: &[u8]) -> Result<Self::Row, String>;
}

struct MsgpackParse;

impl SerdeParse for MsgpackParse {
    type Row = rmpv::Value;
    fn parse(&self, payload: &[u8]) -> Result<rmpv::Value, String> {
        let mut cursor = Cursor::new(payload);
        let value = rmpv::decode::read_value(&mut cursor).map_err(|e| e.to_string())?;
        if cursor.position() as usize != payload.len() {
            return Err(format!(
                "{} bytes after the MessagePack value",
                payload.len() - cursor.position() as usize
            ));
        }
        if !value.is_map() {
            return Err("the MessagePack value is not a map".into());
        }
        Ok(value)
    }
}

struct ProtoParse(MessageDescriptor);

/// A Protobuf message serialized in the JSON mapping with field names as declared
/// (matching the Arrow columns) and 64-bit integers as numbers.
struct ProtoRow(DynamicMessage);

impl serde::Serialize for ProtoRow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let options = prost_reflect::SerializeOptions::new()
            .use_proto_field_name(true)
            .stringify_64_bit_integers(false)
            .skip_default_fields(false);
        self.0.serialize_with_options(s, &options)
    }
}

impl SerdeParse for ProtoParse {
    type Row = ProtoRow;
    fn parse(&self, payload: &[u8]) -> Result<ProtoRow, String> {
        DynamicMessage::decode(self.0.clone(), payload)
            .map(ProtoRow)
            .map_err(|e| e.to_string())
    }
}

struct SerdeRows<P: SerdeParse> {
    schema: SchemaRef,
    parse: P,
    decoder: arrow_json::reader::Decoder,
    buffered: usize,
    done: Vec<RecordBatch>,
}

impl<P: SerdeParse> SerdeRows<P> {
    fn new(schema: SchemaRef, parse: P) -> Result<Self> {
        Ok(SerdeRows {
            decoder: json_decoder(&schema)?,
            schema,
            parse,
            buffered: 0,
            done: Vec::new(),
        })
    }
}

impl<P: SerdeParse> RowDecoder for SerdeRows<P> {
    fn push(&mut self, payload: Option<&[u8]>) -> Result<usize, Failure> {
        let row = self
            .parse
            .parse(payload.ok_or_else(tombstone)?)
            .map_err(Failure::Payload)?;
        if self.buffered == DECODER_BATCH {
            if let Some(b) = self
                .decoder
                .flush()
                .map_err(|e| Failure::Payload(e.to_string()))?
            {
                self.done.push(b);
            }
            self.buffered = 0;
        }
        self.decoder
            .serialize(std::slice::from_ref(&row))
            .map_err(|e| Failure::Payload(e.to_string()))?;
        self.buffered += 1;
        Ok(1)
    }

    fn flush(&mut self) -> Result<RecordBatch, Failure> {
        self.buffered = 0;
        let last = self
            .decoder
            .flush()
            .map_err(|e| Failure::Payload(e.to_string()))?;
        concat_spilled(&self.schema, &mut self.done, last)
    }

    fn reset(&mut self) -> Result<()> {
        self.decoder = json_decoder(&self.schema)?;
        self.buffered = 0;
        self.done.clear();
        Ok(())
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

struct IpcRows {
    schema: SchemaRef,
    done: Vec<RecordBatch>,
}

impl RowDecoder for IpcRows {
    fn push(&mut self, payload: Option<&[u8]>) -> Result<usize, Failure> {
        let payload = payload.ok_or_else(tombstone)?;
        let bad = |e: sabot_core::arrow::error::ArrowError| Failure::Payload(e.to_string());
        let reader =
            arrow_ipc::reader::StreamReader::try_new(Cursor::new(payload), None).map_err(bad)?;
        let mut rows = 0;
        for batch in reader {
            let batch = batch.map_err(bad)?;
            if check_same_columns("arrow", &self.schema, &batch.schema()).is_err() {
                return Err(Failure::Payload(format!(
                    "the message's schema {:?} is not the source's {:?}",
                    batch.schema().fields(),
                    self.schema.fields()
                )));
            }
            rows += batch.num_rows();
            self.done.push(
                RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec()).map_err(bad)?,
            );
        }
        Ok(rows)
    }

    fn flush(&mut self) -> Result<RecordBatch, Failure> {
        concat_spilled(&self.schema, &mut self.done, None)
    }

    fn reset(&mut self) -> Result<()> {
        self.done.clear();
        Ok(())
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

struct RawRows {
    text: bool,
    schema: SchemaRef,
    values: Vec<Option<Vec<u8>>>,
}

impl RowDecoder for RawRows {
    fn push(&mut self, payload: Option<&[u8]>) -> Result<usize, Failure> {
        if self.text
            && let Some(p) = payload
            && let Err(e) = std::str::from_utf8(p)
        {
            return Err(Failure::Payload(format!("not UTF-8: {e}")));
        }
        self.values.push(payload.map(<[u8]>::to_vec));
        Ok(1)
    }

    fn flush(&mut self) -> Result<RecordBatch, Failure> {
        let values = std::mem::take(&mut self.values);
        let column: ArrayRef = if self.text {
            Arc::new(
                values
                    .iter()
                    .map(|v| v.as_deref().map(|b| std::str::from_utf8(b).unwrap_or("")))
                    .collect::<StringArray>(),
            )
        } else {
            Arc::new(values.iter().map(|v| v.as_deref()).collect::<BinaryArray>())
        };
        RecordBatch::try_new(self.schema.clone(), vec![column])
            .map_err(|e| Failure::Payload(e.to_string()))
    }

    fn reset(&mut self) -> Result<()> {
        self.values.clear();
        Ok(())
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

struct AvroRows {
    spec: Arc<AvroSpec>,
    /// Writer schemas by id (the reader schema's own id included).
    writers: HashMap<u32, String>,
    decoder: arrow_avro::reader::Decoder,
    schema: SchemaRef,
    done: Vec<RecordBatch>,
}

impl AvroRows {
    fn new(spec: Arc<AvroSpec>) -> Result<Self> {
        let writers = HashMap::from([(spec.schema_id, spec.reader_schema.clone())]);
        let decoder = avro_decoder(
            &spec.reader_schema,
            &[(spec.schema_id, &spec.reader_schema)],
        )?;
        let schema = decoder.schema();
        Ok(AvroRows {
            spec,
            writers,
            decoder,
            schema,
            done: Vec::new(),
        })
    }

    fn rebuild(&mut self) -> Result<()> {
        let writers: Vec<(u32, &str)> = self
            .writers
            .iter()
            .map(|(id, s)| (*id, s.as_str()))
            .collect();
        self.decoder = avro_decoder(&self.spec.reader_schema, &writers)?;
        Ok(())
    }

    fn spill(&mut self) -> Result<(), Failure> {
        if let Some(b) = self
            .decoder
            .flush()
            .map_err(|e| Failure::Payload(e.to_string()))?
        {
            self.done.push(b);
        }
        Ok(())
    }
}

impl RowDecoder for AvroRows {
    fn push(&mut self, payload: Option<&[u8]>) -> Result<usize, Failure> {
        let payload = payload.ok_or_else(tombstone)?;
        let [0, a, b, c, d, ..] = *payload else {
            return Err(Failure::Payload(
                "not in the Confluent wire format (magic byte 0, then a 4-byte schema id)".into(),
            ));
        };
        let id = u32::from_be_bytes([a, b, c, d]);
        if !self.writers.contains_key(&id) {
            let Some(registry) = &self.spec.registry else {
                return Err(Failure::Payload(format!(
                    "schema id {id} is unknown (the codec knows only id {}; give it a schema registry to fetch others)",
                    self.spec.schema_id
                )));
            };
            let schema = registry.schema_by_id(id)?;
            self.spill()?;
            self.writers.insert(id, schema);
            self.rebuild()?;
        }
        if self.decoder.batch_is_full() {
            self.spill()?;
        }
        let before = self.decoder.capacity();
        let n = self
            .decoder
            .decode(payload)
            .map_err(|e| Failure::Payload(e.to_string()))?;
        if n != payload.len() {
            return Err(Failure::Payload(format!(
                "the Avro datum ends after {n} of {} bytes",
                payload.len()
            )));
        }
        Ok(before - self.decoder.capacity())
    }

    fn flush(&mut self) -> Result<RecordBatch, Failure> {
        self.spill()?;
        concat_spilled(&self.schema, &mut self.done, None)
    }

    fn reset(&mut self) -> Result<()> {
        self.done.clear();
        self.rebuild()
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// Encodes Arrow batches into one payload per row. See [`Codec::encoder`].
pub struct PayloadEncoder {
    format: &'static str,
    kind: EncodeKind,
}

enum EncodeKind {
    Json,
    MessagePack,
    Protobuf(MessageDescriptor),
    ArrowIpc,
    Raw,
    Avro(Box<arrow_avro::writer::Encoder>),
}

impl fmt::Debug for PayloadEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PayloadEncoder")
            .field("format", &self.format)
            .finish()
    }
}

/// Encoded payloads, one per row, in one buffer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Payloads {
    buf: Vec<u8>,
    /// Per row, its bytes in `buf` (none: a tombstone).
    spans: Vec<Option<(usize, usize)>>,
}

impl Payloads {
    /// How many payloads.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Payload `i` (none: a tombstone).
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.spans[i].map(|(a, b)| &self.buf[a..b])
    }

    /// The payloads in row order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Option<&[u8]>> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Appends a payload written by `write` into the buffer.
    fn push_with<E>(&mut self, write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>) -> Result<(), E> {
        let start = self.buf.len();
        write(&mut self.buf)?;
        self.spans.push(Some((start, self.buf.len())));
        Ok(())
    }

    fn push(&mut self, bytes: Option<&[u8]>) {
        match bytes {
            Some(b) => {
                let start = self.buf.len();
                self.buf.extend_from_slice(b);
                self.spans.push(Some((start, self.buf.len())));
            }
            None => self.spans.push(None),
        }
    }
}

impl PayloadEncoder {
    /// One payload per row of `batch` (none for a null in a bytes/text column: sent as
    /// a tombstone).
    pub fn encode(&mut self, batch: &RecordBatch) -> Result<Payloads> {
        let format = self.format;
        let err = |reason: String| KafkaError::Codec { format, reason };
        let mut out = Payloads::default();
        match &mut self.kind {
            EncodeKind::Json => {
                let mut w = arrow_json::LineDelimitedWriter::new(Vec::new());
                w.write(batch)?;
                w.finish()?;
                out.buf = w.into_inner();
                let mut start = 0;
                for (i, &b) in out.buf.iter().enumerate() {
                    if b == b'\n' {
                        out.spans.push(Some((start, i)));
                        start = i + 1;
                    }
                }
            }
            EncodeKind::MessagePack => {
                for line in json_lines(batch)?.iter() {
                    let v: serde_json::Value = serde_json::from_slice(line.unwrap_or_default())
                        .map_err(|e| err(e.to_string()))?;
                    out.push_with(|buf| rmp_serde::encode::write(buf, &v))
                        .map_err(|e| err(e.to_string()))?;
                }
            }
            EncodeKind::Protobuf(desc) => {
                for line in json_lines(batch)?.iter() {
                    let mut de = serde_json::Deserializer::from_slice(line.unwrap_or_default());
                    let msg = DynamicMessage::deserialize(desc.clone(), &mut de)
                        .map_err(|e| err(e.to_string()))?;
                    out.push_with(|buf| msg.encode(buf))
                        .map_err(|e| err(e.to_string()))?;
                }
            }
            EncodeKind::ArrowIpc => {
                for r in 0..batch.num_rows() {
                    out.push_with(|buf| {
                        let mut w = arrow_ipc::writer::StreamWriter::try_new(buf, &batch.schema())?;
                        w.write(&batch.slice(r, 1))?;
                        w.finish()
                    })?;
                }
            }
            EncodeKind::Raw => {
                let col = batch.column(0);
                if let Some(a) = col.as_any().downcast_ref::<BinaryArray>() {
                    a.iter().for_each(|v| out.push(v));
                } else if let Some(a) = col.as_any().downcast_ref::<StringArray>() {
                    a.iter().for_each(|v| out.push(v.map(str::as_bytes)));
                } else {
                    return Err(err(format!("cannot write a {} column", col.data_type())));
                }
            }
            EncodeKind::Avro(encoder) => {
                encoder.encode(batch).map_err(|e| err(e.to_string()))?;
                encoder.flush().iter().for_each(|b| out.push(Some(&b)));
            }
        }
        Ok(out)
    }
}

/// Each row of `batch` as a JSON object (null fields left out).
fn json_lines(batch: &RecordBatch) -> Result<Payloads> {
    PayloadEncoder {
        format: "json",
        kind: EncodeKind::Json,
    }
    .encode(batch)
}

#[cfg(test)]
mod tests;
