//! The Arrow Flight exchange on loopback: 8,192-row batches from a sending thread through
//! a `RemoteSender`, the server and into a subtask's queue, next to the same batches
//! encoded and decoded in memory by the same wire code (no network): the difference is
//! what gRPC, HTTP/2 and the loopback socket cost. Throughput counts the Arrow IPC body
//! bytes of the batches.

// Links the benches' shared crate, and with it the allocator of the `sabot` binary.
use sabot_benches as _;

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sabot::arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use sabot::arrow::datatypes::{DataType, Field, Schema};
use sabot::arrow::record_batch::RecordBatch;
use sabot::core::Message;
use sabot::shuffle::flight::wire::{FrameDecoder, FrameEncoder};
use sabot::shuffle::flight::{ChannelId, FlightConfig, ShuffleServer};
use sabot::shuffle::queue;

const ROWS: usize = 8_192;
const BATCHES: usize = 32;

/// A transaction-like batch: account, event time, amount, merchant, country.
fn batch(seed: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("account", DataType::Int64, false),
        Field::new("ts", DataType::Int64, false),
        Field::new("amount", DataType::Float64, false),
        Field::new("merchant", DataType::Int64, false),
        Field::new("country", DataType::Utf8, false),
    ]));
    let n = ROWS as i64;
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            (0..n).map(|i| (i * 7919 + seed) % 100_000),
        )),
        Arc::new(Int64Array::from_iter_values(
            (0..n).map(|i| 1_700_000_000_000 + i),
        )),
        Arc::new(Float64Array::from_iter_values(
            (0..n).map(|i| (i % 997) as f64 * 1.25),
        )),
        Arc::new(Int64Array::from_iter_values((0..n).map(|i| i % 5_000))),
        Arc::new(StringArray::from_iter_values(
            (0..n).map(|i| ["DE", "FR", "US", "JP", "BR"][(i % 5) as usize]),
        )),
    ];
    RecordBatch::try_new(schema, cols).expect("batch")
}

fn bench(c: &mut Criterion) {
    let batches: Vec<RecordBatch> = (0..BATCHES as i64).map(batch).collect();
    let schema = batches[0].schema();
    let body_bytes: usize = {
        let mut enc = FrameEncoder::default();
        let mut frames = Vec::new();
        for b in &batches {
            enc.encode(&Message::Data(b.clone()), &mut frames)
                .expect("encode");
        }
        frames.iter().map(|f| f.data_body.len()).sum()
    };
    let server = ShuffleServer::start(
        "127.0.0.1:0".parse().expect("addr"),
        FlightConfig::default(),
    )
    .expect("server");
    let client = server.client(server.local_addr());
    let next = AtomicUsize::new(0);

    let mut g = c.benchmark_group("flight_loopback_8192_row_batches");
    g.throughput(Throughput::Bytes(body_bytes as u64));
    g.sample_size(20);
    g.bench_function("sabot_flight_exchange", |b| {
        b.iter(|| {
            let channel = ChannelId::new(1, next.fetch_add(1, Ordering::Relaxed), 0);
            let (mut senders, rx) = queue::fan_in(1, 8);
            server.register(channel, schema.clone(), senders.remove(0));
            let mut tx = client.open(channel, schema.clone());
            std::thread::scope(|s| {
                s.spawn(|| {
                    for b in &batches {
                        tx.send(Message::Data(b.clone())).expect("send");
                    }
                    tx.send(Message::EndOfStream).expect("send");
                });
                let mut rows = 0;
                while let Some((_, m)) = rx.pop() {
                    match m.expect("delivery") {
                        Message::EndOfStream => break,
                        m => rows += m.num_rows(),
                    }
                }
                assert_eq!(rows, ROWS * BATCHES);
            });
            tx.finish().expect("finish");
        })
    });
    g.bench_function("baseline_wire_encode_decode_in_memory", |b| {
        b.iter(|| {
            let mut enc = FrameEncoder::default();
            let first = enc.open(ChannelId::new(1, 0, 0), &schema);
            let mut dec = FrameDecoder::open(&first).expect("open");
            let mut frames = Vec::new();
            let mut rows = 0;
            for batch in &batches {
                enc.encode(&Message::Data(batch.clone()), &mut frames)
                    .expect("encode");
                for f in frames.drain(..) {
                    if let Some(m) = dec.decode(f).expect("decode") {
                        rows += m.num_rows();
                    }
                }
            }
            black_box(rows)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
