//! The shuffle's wire format on top of Arrow Flight's `FlightData`, in both directions.
//!
//! A channel carries the messages of one upstream subtask to one downstream subtask of
//! one exchange, as one Flight `DoPut` stream:
//!
//! - Frame 1: `flight_descriptor.cmd` = `SBT1` + exchange, upstream subtask and
//!   downstream subtask as u32 little-endian (16 bytes); `data_header` = the stream's
//!   schema as an Arrow IPC schema message.
//! - A batch: Arrow IPC dictionary messages (if any) then the record batch message, in
//!   `data_header` / `data_body`; `app_metadata` empty.
//! - A control message: empty `data_header` and `data_body`; `app_metadata` =
//!   `W` + watermark (i64 LE), `B` + checkpoint id (u64 LE) + trigger time (i64 LE),
//!   `I` (idle) or `E` (end of stream).
//!
//! The receiver answers on the `DoPut` result stream: `C` + credits (u32 LE), one credit
//! per frame it has handed to its subtask, and `D` once it has delivered the end of
//! stream. The sender starts with [`FlightConfig::initial_credits`](super::FlightConfig)
//! and sends a frame only while it holds a credit, so a slow receiver slows the sender.
//!
//! Everything here is a pure function of its input: the receive path
//! ([`FrameDecoder`]) treats every frame as untrusted and answers malformed bytes with
//! [`ShuffleError::Malformed`], never a panic (fuzzed by `fuzz/fuzz_targets/shuffle_frames.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use arrow_flight::{FlightData, FlightDescriptor};
use arrow_ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions};
use arrow_ipc::{MessageHeader, root_as_message};
use bytes::Bytes;
use sabot_core::arrow::array::ArrayRef;
use sabot_core::arrow::buffer::Buffer;
use sabot_core::arrow::datatypes::Schema;
use sabot_core::arrow::error::ArrowError;
use sabot_core::arrow::record_batch::RecordBatch;
use sabot_core::{CheckpointBarrier, CheckpointId, Message, SchemaRef, Timestamp};

pub use crate::channel::ChannelId;
use crate::{Result, ShuffleError};

const WATERMARK: u8 = b'W';
const BARRIER: u8 = b'B';
const IDLE: u8 = b'I';
const END: u8 = b'E';
const LATENCY: u8 = b'L';
const CREDIT: u8 = b'C';
const DONE: u8 = b'D';

/// Turns messages into frames for one channel.
#[derive(Debug)]
pub struct FrameEncoder {
    generator: IpcDataGenerator,
    dictionaries: DictionaryTracker,
    options: IpcWriteOptions,
    context: IpcWriteContext,
    /// The session the channel belongs to (see [`FlightConfig::session`]).
    ///
    /// [`FlightConfig::session`]: super::FlightConfig::session
    session: u64,
}

impl Default for FrameEncoder {
    fn default() -> Self {
        FrameEncoder {
            generator: IpcDataGenerator::default(),
            dictionaries: DictionaryTracker::new(false),
            options: IpcWriteOptions::default(),
            context: IpcWriteContext::default(),
            session: 0,
        }
    }
}

impl FrameEncoder {
    /// An encoder for a channel of session `session` (named in the first frame).
    pub fn for_session(session: u64) -> Self {
        FrameEncoder {
            session,
            ..FrameEncoder::default()
        }
    }

    /// The first frame of a channel: its id and schema (which also numbers the
    /// dictionaries the batches will send).
    pub fn open(&mut self, channel: ChannelId, schema: &Schema) -> FlightData {
        let encoded = self.generator.schema_to_bytes_with_dictionary_tracker(
            schema,
            &mut self.dictionaries,
            &self.options,
        );
        let mut descriptor = FlightDescriptor::new_cmd(channel.to_cmd());
        if self.session != 0 {
            descriptor.path = vec![self.session.to_string()];
        }
        FlightData::from(encoded).with_descriptor(descriptor)
    }

    /// Appends the frames of `msg` to `out` (a batch with dictionaries takes several).
    pub fn encode(&mut self, msg: &Message, out: &mut Vec<FlightData>) -> Result<()> {
        let control = |meta: Vec<u8>| FlightData::new().with_app_metadata(meta);
        match msg {
            Message::Data(batch) => {
                let (dicts, data) = self.generator.encode(
                    batch,
                    &mut self.dictionaries,
                    &self.options,
                    &mut self.context,
                )?;
                out.extend(dicts.into_iter().map(FlightData::from));
                out.push(FlightData::from(data));
            }
            Message::Watermark(wm) => {
                let mut m = vec![WATERMARK];
                m.extend_from_slice(&wm.millis().to_le_bytes());
                out.push(control(m));
            }
            Message::Barrier(b) => {
                let mut m = vec![BARRIER];
                m.extend_from_slice(&b.id.0.to_le_bytes());
                m.extend_from_slice(&b.triggered_at.millis().to_le_bytes());
                out.push(control(m));
            }
            Message::Idle => out.push(control(vec![IDLE])),
            Message::EndOfStream => out.push(control(vec![END])),
            Message::LatencyMarker(us) => {
                let mut m = vec![LATENCY];
                m.extend_from_slice(&us.to_le_bytes());
                out.push(control(m));
            }
            other => {
                return Err(ShuffleError::Malformed {
                    channel: None,
                    reason: format!("message kind {other:?} has no wire encoding"),
                });
            }
        }
        Ok(())
    }
}

/// What the receiving side tells the sender.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The sender may send this many more frames.
    Credit(u32),
    /// The end of stream was delivered: nothing is left in flight.
    Done,
}

impl Reply {
    /// The reply's bytes (a `PutResult`'s `app_metadata`).
    pub fn to_bytes(self) -> Bytes {
        match self {
            Reply::Credit(n) => {
                let mut b = vec![CREDIT];
                b.extend_from_slice(&n.to_le_bytes());
                b.into()
            }
            Reply::Done => Bytes::from_static(&[DONE]),
        }
    }

    /// Parses a reply (from the peer: untrusted).
    pub fn from_bytes(b: &[u8]) -> Result<Reply> {
        match b {
            [CREDIT, a, b, c, d] => Ok(Reply::Credit(u32::from_le_bytes([*a, *b, *c, *d]))),
            [DONE] => Ok(Reply::Done),
            _ => Err(ShuffleError::Malformed {
                channel: None,
                reason: format!("unknown reply of {} bytes from the receiver", b.len()),
            }),
        }
    }
}

/// Turns the frames of one channel back into messages. Every frame is untrusted input.
#[derive(Debug)]
pub struct FrameDecoder {
    channel: ChannelId,
    session: u64,
    schema: SchemaRef,
    dictionaries: HashMap<i64, ArrayRef>,
}

impl FrameDecoder {
    /// Reads a channel's first frame: the channel id and its schema.
    pub fn open(first: &FlightData) -> Result<FrameDecoder> {
        let cmd = first
            .flight_descriptor
            .as_ref()
            .map(|d| &d.cmd[..])
            .unwrap_or_default();
        let channel = ChannelId::from_cmd(cmd)?;
        let malformed = |reason: String| ShuffleError::Malformed {
            channel: Some(channel),
            reason,
        };
        let session = match first.flight_descriptor.as_ref().map(|d| &d.path[..]) {
            None | Some([]) => 0,
            Some([s]) => s
                .parse::<u64>()
                .map_err(|_| malformed(format!("the session `{s}` is not a number")))?,
            Some(p) => {
                return Err(malformed(format!(
                    "the descriptor names {} sessions, not one",
                    p.len()
                )));
            }
        };
        let message = root_as_message(&first.data_header)
            .map_err(|e| malformed(format!("the first frame is not an IPC message: {e}")))?;
        if message.header_type() != MessageHeader::Schema {
            return Err(malformed(format!(
                "the first frame must hold the schema, got {:?}",
                message.header_type()
            )));
        }
        let schema = Schema::try_from(first)
            .map_err(|e| malformed(format!("cannot read the schema: {e}")))?;
        Ok(FrameDecoder {
            channel,
            session,
            schema: Arc::new(schema),
            dictionaries: HashMap::new(),
        })
    }

    /// The channel this decoder reads.
    pub fn channel(&self) -> ChannelId {
        self.channel
    }

    /// The session the sender belongs to (0: none named).
    pub fn session(&self) -> u64 {
        self.session
    }

    /// The schema the sender declared.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Decodes one frame: a message, or `None` for a frame that only updates the
    /// decoder (a dictionary).
    pub fn decode(&mut self, frame: FlightData) -> Result<Option<Message>> {
        if frame.data_header.is_empty() {
            if !frame.data_body.is_empty() {
                return Err(self.malformed("a control frame carries a body".into()));
            }
            return self.control(&frame.app_metadata).map(Some);
        }
        if !frame.app_metadata.is_empty() {
            return Err(self.malformed("a data frame carries app metadata".into()));
        }
        let message = root_as_message(&frame.data_header)
            .map_err(|e| self.malformed(format!("not an IPC message: {e}")))?;
        let declared = message.bodyLength();
        if usize::try_from(declared).ok() != Some(frame.data_body.len()) {
            return Err(self.malformed(format!(
                "the IPC header declares a body of {declared} bytes, the frame has {}",
                frame.data_body.len()
            )));
        }
        let body = Buffer::from(frame.data_body.clone());
        match message.header_type() {
            MessageHeader::RecordBatch => {
                let header = message
                    .header_as_record_batch()
                    .ok_or_else(|| self.malformed("record batch header missing".into()))?;
                self.check_buffers(header, body.len())?;
                let schema = self.schema.clone();
                let dictionaries = &self.dictionaries;
                let batch = guarded(|| {
                    arrow_ipc::reader::read_record_batch(
                        &body,
                        header,
                        schema,
                        dictionaries,
                        None,
                        &message.version(),
                    )
                })
                .map_err(|e| self.malformed(format!("bad record batch: {e}")))?;
                Ok(Some(Message::Data(batch)))
            }
            MessageHeader::DictionaryBatch => {
                let header = message
                    .header_as_dictionary_batch()
                    .ok_or_else(|| self.malformed("dictionary header missing".into()))?;
                let data = header
                    .data()
                    .ok_or_else(|| self.malformed("dictionary batch without data".into()))?;
                self.check_buffers(data, body.len())?;
                let (schema, dictionaries) = (&self.schema, &mut self.dictionaries);
                guarded(|| {
                    arrow_ipc::reader::read_dictionary(
                        &body,
                        header,
                        schema,
                        dictionaries,
                        &message.version(),
                    )
                })
                .map_err(|e| self.malformed(format!("bad dictionary: {e}")))?;
                Ok(None)
            }
            other => Err(self.malformed(format!("unexpected IPC message {other:?}"))),
        }
    }

    /// Every buffer the header points to must lie inside the body (the IPC reader slices
    /// without checking, and would panic).
    fn check_buffers(&self, header: arrow_ipc::RecordBatch<'_>, body: usize) -> Result<()> {
        for (i, b) in header.buffers().into_iter().flatten().enumerate() {
            let end = u64::try_from(b.offset())
                .ok()
                .zip(u64::try_from(b.length()).ok())
                .and_then(|(o, l)| o.checked_add(l));
            if end.is_none_or(|end| end > body as u64) {
                return Err(self.malformed(format!(
                    "buffer {i} at offset {} of length {} lies outside the {body}-byte body",
                    b.offset(),
                    b.length()
                )));
            }
        }
        Ok(())
    }

    fn control(&self, meta: &[u8]) -> Result<Message> {
        let i64_at = |b: &[u8]| i64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        match meta {
            [WATERMARK, rest @ ..] if rest.len() == 8 => {
                Ok(Message::Watermark(Timestamp::from_millis(i64_at(rest))))
            }
            [BARRIER, rest @ ..] if rest.len() == 16 => Ok(Message::Barrier(CheckpointBarrier {
                id: CheckpointId(i64_at(&rest[..8]) as u64),
                triggered_at: Timestamp::from_millis(i64_at(&rest[8..])),
            })),
            [IDLE] => Ok(Message::Idle),
            [END] => Ok(Message::EndOfStream),
            [LATENCY, rest @ ..] if rest.len() == 8 => Ok(Message::LatencyMarker(i64_at(rest))),
            [] => Err(self.malformed("an empty frame".into())),
            [tag, ..] => Err(self.malformed(format!(
                "unknown control message {:?} of {} bytes",
                *tag as char,
                meta.len()
            ))),
        }
    }

    fn malformed(&self, reason: String) -> ShuffleError {
        ShuffleError::Malformed {
            channel: Some(self.channel),
            reason,
        }
    }
}

/// Runs Arrow's IPC reader, turning a panic into an error. The reader checks most of
/// what it reads, but not everything (a buffer whose length is not a multiple of its
/// element width trips an assertion, for one): a peer's bytes must not take the worker
/// down. The decoder's state after such a frame does not matter: the channel fails.
fn guarded<T>(
    read: impl FnOnce() -> std::result::Result<T, ArrowError>,
) -> std::result::Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)) {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(panic) => Err(format!(
            "the Arrow IPC reader gave up: {}",
            panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into())
        )),
    }
}

/// Checks that a batch fits the schema a receiver expects (field names and types).
pub(crate) fn same_fields(a: &Schema, b: &Schema) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields().iter().zip(b.fields()).all(|(x, y)| {
            x.name() == y.name()
                && x.data_type() == y.data_type()
                && x.is_nullable() == y.is_nullable()
        })
}

/// The in-memory size of a batch's buffers (for throughput figures).
pub fn batch_bytes(batch: &RecordBatch) -> usize {
    batch.get_array_memory_size()
}

#[cfg(test)]
mod tests {
    use sabot_core::arrow::array::{Array, DictionaryArray, Int64Array};
    use sabot_core::arrow::datatypes::{DataType, Field, Int32Type};

    use super::*;

    fn round_trip(batch: &RecordBatch) -> Vec<Message> {
        let mut enc = FrameEncoder::default();
        let first = enc.open(ChannelId::new(1, 2, 3), &batch.schema());
        let mut dec = FrameDecoder::open(&first).unwrap();
        assert_eq!(dec.channel(), ChannelId::new(1, 2, 3));
        let mut frames = Vec::new();
        for m in [
            Message::Data(batch.clone()),
            Message::Watermark(Timestamp::from_millis(-3)),
            Message::Data(batch.clone()),
            Message::LatencyMarker(1_733_000_000_123_456),
            Message::EndOfStream,
        ] {
            enc.encode(&m, &mut frames).unwrap();
        }
        frames
            .into_iter()
            .filter_map(|f| dec.decode(f).unwrap())
            .collect()
    }

    #[test]
    fn batches_with_dictionaries_and_controls_round_trip() {
        let dict: DictionaryArray<Int32Type> = vec![Some("a"), None, Some("b"), Some("a")]
            .into_iter()
            .collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("d", dict.data_type().clone(), true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![1, 2, 3, 4])), Arc::new(dict)],
        )
        .unwrap();
        let got = round_trip(&batch);
        assert_eq!(got.len(), 5);
        assert!(matches!(&got[0], Message::Data(b) if *b == batch));
        assert!(matches!(&got[1], Message::Watermark(w) if w.millis() == -3));
        assert!(matches!(&got[2], Message::Data(b) if *b == batch));
        assert!(matches!(
            &got[3],
            Message::LatencyMarker(1_733_000_000_123_456)
        ));
        assert!(matches!(&got[4], Message::EndOfStream));
    }

    /// A record batch frame for a one-column `schema` with these buffers over a zeroed
    /// body of `body` bytes, as a hostile peer could send.
    fn hostile_frame(buffers: &[(i64, i64)], body: usize) -> FlightData {
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        let nodes = fbb.create_vector(&[arrow_ipc::FieldNode::new(2, 0)]);
        let buffers: Vec<_> = buffers
            .iter()
            .map(|&(o, l)| arrow_ipc::Buffer::new(o, l))
            .collect();
        let buffers = fbb.create_vector(&buffers);
        let mut rb = arrow_ipc::RecordBatchBuilder::new(&mut fbb);
        rb.add_length(2);
        rb.add_nodes(nodes);
        rb.add_buffers(buffers);
        let rb = rb.finish();
        let mut m = arrow_ipc::MessageBuilder::new(&mut fbb);
        m.add_version(arrow_ipc::MetadataVersion::V5);
        m.add_header_type(MessageHeader::RecordBatch);
        m.add_header(rb.as_union_value());
        m.add_bodyLength(body as i64);
        let m = m.finish();
        fbb.finish(m, None);
        FlightData::new()
            .with_data_header(fbb.finished_data().to_vec())
            .with_data_body(vec![0u8; body])
    }

    fn decoder_for(data_type: DataType) -> FrameDecoder {
        let schema = Schema::new(vec![Field::new("c", data_type, false)]);
        FrameDecoder::open(&FrameEncoder::default().open(ChannelId::new(1, 0, 0), &schema)).unwrap()
    }

    /// Found by the fuzzer: a header whose buffer lies outside the body made Arrow's IPC
    /// reader panic.
    #[test]
    fn a_buffer_outside_the_body_is_an_error_not_a_panic() {
        let frame = hostile_frame(&[(0, 0), (1_000, 16)], 16);
        let e = decoder_for(DataType::Int64).decode(frame).unwrap_err();
        assert!(e.to_string().contains("outside the 16-byte body"), "{e}");
    }

    /// Found by the fuzzer: an offsets buffer whose length is not a multiple of 4 trips
    /// an assertion inside Arrow's validation; the decoder reports it as malformed.
    #[test]
    fn a_ragged_offsets_buffer_is_an_error_not_a_panic() {
        let frame = hostile_frame(&[(0, 0), (0, 13), (16, 0)], 16);
        let e = decoder_for(DataType::Utf8).decode(frame).unwrap_err();
        assert!(matches!(e, ShuffleError::Malformed { .. }), "{e}");
        assert!(
            e.to_string().contains("the Arrow IPC reader gave up"),
            "{e}"
        );
    }

    #[test]
    fn channel_ids_and_replies_parse_back_and_reject_garbage() {
        let c = ChannelId::new(7, 8, 9);
        assert_eq!(ChannelId::from_cmd(&c.to_cmd()).unwrap(), c);
        assert!(ChannelId::from_cmd(b"SBT1").is_err());
        assert!(ChannelId::from_cmd(&[0; 16]).is_err());
        for r in [Reply::Credit(0), Reply::Credit(u32::MAX), Reply::Done] {
            assert_eq!(Reply::from_bytes(&r.to_bytes()).unwrap(), r);
        }
        assert!(Reply::from_bytes(b"C12").is_err());
        assert!(Reply::from_bytes(b"").is_err());
    }
}
