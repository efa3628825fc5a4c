//! The shuffle's receive path: frames from another process decoded into messages. Any
//! bytes give a message or an error, never a panic.
//!
//! Two ways in: (0) the input is a sequence of length-prefixed protobuf `FlightData`
//! messages, the first one opening the channel; (1) a valid opening for a fixed schema,
//! then valid frames (dictionary, batch, control) with bytes of their header and body
//! overwritten or cut where the input says, so the fuzzer reaches deep into the Arrow IPC
//! decoder.

#![no_main]

use std::sync::{Arc, OnceLock};

use arrow_flight::FlightData;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use sabot_core::Message;
use sabot_core::arrow::array::{
    Array, ArrayRef, BooleanArray, DictionaryArray, Int64Array, StringArray,
};
use sabot_core::arrow::datatypes::{Field, Int32Type, Schema};
use sabot_core::arrow::record_batch::RecordBatch;
use sabot_shuffle::flight::ChannelId;
use sabot_shuffle::flight::wire::{FrameDecoder, FrameEncoder};

struct Templates {
    open: FlightData,
    frames: Vec<FlightData>,
}

fn templates() -> &'static Templates {
    static T: OnceLock<Templates> = OnceLock::new();
    T.get_or_init(|| {
        let dict: DictionaryArray<Int32Type> =
            vec![Some("de"), None, Some("us"), Some("de")].into_iter().collect();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![1, -2, 3, i64::MAX])),
            Arc::new(StringArray::from(vec![Some("a"), None, Some("ccc"), Some("")])),
            Arc::new(dict),
            Arc::new(BooleanArray::from(vec![Some(true), None, Some(false), Some(true)])),
        ];
        let fields: Vec<Field> = ["i", "s", "d", "b"]
            .iter()
            .zip(&cols)
            .map(|(n, c)| Field::new(*n, c.data_type().clone(), true))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
        let mut enc = FrameEncoder::default();
        let open = enc.open(ChannelId::new(1, 2, 3), &schema);
        let mut frames = Vec::new();
        for m in [
            Message::Data(batch),
            Message::Watermark(sabot_core::Timestamp::from_millis(7)),
            Message::EndOfStream,
        ] {
            enc.encode(&m, &mut frames).unwrap();
        }
        Templates { open, frames }
    })
}

/// Splits `data` into chunks prefixed by a little-endian u16 length.
fn chunks(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if data.len() < 2 {
            return None;
        }
        let n = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
        let (chunk, rest) = data[2..].split_at(n);
        data = rest;
        Some(chunk)
    })
}

fn feed(decoder: &mut FrameDecoder, frame: FlightData) {
    if let Ok(Some(Message::Data(b))) = decoder.decode(frame) {
        // A batch that decodes must have the declared columns.
        assert_eq!(b.num_columns(), decoder.schema().fields().len());
    }
}

fn edit(bytes: &bytes::Bytes, edits: &[u8]) -> bytes::Bytes {
    let mut v = bytes.to_vec();
    for e in edits.chunks_exact(3) {
        if v.is_empty() {
            break;
        }
        let pos = u16::from_le_bytes([e[0], e[1]]) as usize % v.len();
        if e[2] == 0xff {
            v.truncate(pos);
        } else {
            v[pos] = e[2];
        }
    }
    v.into()
}

fuzz_target!(|data: &[u8]| {
    // The decoder catches panics inside Arrow's IPC reader and reports them as errors;
    // libfuzzer's hook would abort at the panic itself. A quiet hook lets those unwind
    // to the decoder, and a panic that escapes it still fails the run (libfuzzer-sys
    // aborts on a panic out of this closure).
    static QUIET: OnceLock<()> = OnceLock::new();
    QUIET.get_or_init(|| std::panic::set_hook(Box::new(|_| {})));
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let mut frames = chunks(rest);
        let Some(first) = frames.next() else { return };
        let Ok(first) = FlightData::decode(first) else {
            return;
        };
        let Ok(mut decoder) = FrameDecoder::open(&first) else {
            return;
        };
        for f in frames {
            if let Ok(frame) = FlightData::decode(f) {
                feed(&mut decoder, frame);
            }
        }
    } else {
        let t = templates();
        let mut decoder = FrameDecoder::open(&t.open).unwrap();
        for c in chunks(rest) {
            let Some((&pick, edits)) = c.split_first() else {
                continue;
            };
            let mut frame = t.frames[pick as usize % t.frames.len()].clone();
            if pick & 0x80 == 0 {
                frame.data_header = edit(&frame.data_header, edits);
            } else {
                frame.data_body = edit(&frame.data_body, edits);
            }
            feed(&mut decoder, frame);
        }
    }
});
